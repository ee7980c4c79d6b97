from .convlstm import ConvLSTMCell
from .convttlstm import ConvTTLSTMCell
from .mim import MIMBlock, MIMNCell
from .mimcell import MIMCell
from .mklstm import MKLSTMCell
from .stlstm import SpatioTemporalLSTMCell

__all__ = ["ConvLSTMCell", "SpatioTemporalLSTMCell", "MKLSTMCell", "ConvTTLSTMCell",
           "MIMNCell", "MIMBlock", "MIMCell"]
