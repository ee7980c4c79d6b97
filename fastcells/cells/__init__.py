from .convlstm import ConvLSTMCell
from .convttlstm import ConvTTLSTMCell
from .mklstm import MKLSTMCell
from .split_convlstm import SplitConvLSTMCell
from .stlstm import SpatioTemporalLSTMCell

__all__ = ["ConvLSTMCell", "SpatioTemporalLSTMCell", "MKLSTMCell", "ConvTTLSTMCell",
           "SplitConvLSTMCell"]
