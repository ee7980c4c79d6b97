"""Re-creations of the public ConvRNN cells and models that fastcells.patch recognises,
written from the structure of their published code (attribute names, conv layouts, forward
signatures), to test patching without the original repositories. Only the devices differ:
these create states on the input's device where the originals call ``.cuda()``."""
