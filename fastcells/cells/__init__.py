from .causal_lstm import CausalLSTMCell, GradientHighwayUnit
from .convlstm import ConvLSTMCell
from .convttlstm import ConvTTLSTMCell
from .mim import MIMBlock, MIMNCell
from .mimcell import MIMCell
from .mklstm import MKLSTMCell
from .split_convlstm import SplitConvLSTMCell
from .stlstm import SpatioTemporalLSTMCell

__all__ = ["ConvLSTMCell", "SpatioTemporalLSTMCell", "MKLSTMCell", "ConvTTLSTMCell",
           "MIMNCell", "MIMBlock", "MIMCell", "CausalLSTMCell", "GradientHighwayUnit",
           "SplitConvLSTMCell"]
