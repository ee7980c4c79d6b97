"""The ST-LSTM cell of thuml/predrnn-pytorch's earlier releases: biased convolutions,
LayerNorm always (the layer_norm argument is ignored)."""
import torch
from torch import nn

from . import thuml


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, filter_size, stride=stride, padding=self.padding),
                nn.LayerNorm([cout, width, width]))

        self.conv_x = block(in_channel, num_hidden * 7)
        self.conv_h = block(num_hidden, num_hidden * 4)
        self.conv_m = block(num_hidden, num_hidden * 3)
        self.conv_o = block(num_hidden * 2, num_hidden)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, 1, stride=1, padding=0)

    def forward(self, x_t, h_t, c_t, m_t):
        x_concat, h_concat, m_concat = self.conv_x(x_t), self.conv_h(h_t), self.conv_m(m_t)
        i_x, f_x, g_x, i_x_p, f_x_p, g_x_p, o_x = torch.split(x_concat, self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(h_concat, self.num_hidden, dim=1)
        i_m, f_m, g_m = torch.split(m_concat, self.num_hidden, dim=1)
        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + self._forget_bias)
        g_t = torch.tanh(g_x + g_h)
        c_new = f_t * c_t + i_t * g_t
        i_t_p = torch.sigmoid(i_x_p + i_m)
        f_t_p = torch.sigmoid(f_x_p + f_m + self._forget_bias)
        g_t_p = torch.tanh(g_x_p + g_m)
        m_new = f_t_p * m_t + i_t_p * g_t_p
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new


class RNN(thuml.RNN):
    """The PredRNN model with the older cell."""

    cell_class = SpatioTemporalLSTMCell
