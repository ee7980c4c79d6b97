"""mazhf/MS-RNN models/convlstm.py: ConvLSTM_Cell (biased _conv_x2h and _conv_h2h, gate order
i, f, g, o, no forget bias; hiddens None means zeros) and the ConvLSTM stack with the embed/fc
1x1 convolutions the repository's Model passes in."""
import torch
from torch import nn


class ConvLSTM_Cell(nn.Module):
    def __init__(self, input_channel, output_channel, b_h_w, kernel_size, stride, padding):
        super().__init__()
        self._batch_size, self._state_height, self._state_width = b_h_w
        self._conv_x2h = nn.Conv2d(input_channel, output_channel * 4, kernel_size, stride,
                                   padding)
        self._conv_h2h = nn.Conv2d(input_channel, output_channel * 4, kernel_size, stride,
                                   padding)
        self._input_channel = input_channel
        self._output_channel = output_channel

    def forward(self, x, hiddens):
        if hiddens is None:
            shape = (x.shape[0], self._input_channel, self._state_height, self._state_width)
            h, c = (torch.zeros(shape, dtype=x.dtype, device=x.device) for _ in range(2))
        else:
            h, c = hiddens
        i, f, g, o = torch.chunk(self._conv_x2h(x) + self._conv_h2h(h), 4, dim=1)
        next_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        next_h = torch.sigmoid(o) * torch.tanh(next_c)
        return next_h, [next_h, next_c]


class ConvLSTM(nn.Module):
    """The layer stack over a sequence (B, T, Cin, H, W), hiddens carried across steps."""

    def __init__(self, in_channels, channels, b_h_w, n_layers=2, kernel_size=3):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, channels, 1)
        self.fc = nn.Conv2d(channels, in_channels, 1)
        self.lstm = nn.ModuleList(
            ConvLSTM_Cell(channels, channels, b_h_w, kernel_size, 1, kernel_size // 2)
            for _ in range(n_layers))

    def forward(self, frames):
        layer_hiddens, outputs = None, []
        for t in range(frames.shape[1]):
            x = self.embed(frames[:, t])
            next_hiddens = []
            for i, cell in enumerate(self.lstm):
                x, hiddens = cell(x, None if layer_hiddens is None else layer_hiddens[i])
                next_hiddens.append(hiddens)
            layer_hiddens = next_hiddens
            outputs.append(self.fc(x))
        return torch.stack(outputs, dim=1)
