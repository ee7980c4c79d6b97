"""thuml/predrnn-pytorch: the current ST-LSTM cell (bias-free convs, optional LayerNorm),
the PredRNN-v2 cell (returns delta_c, delta_m) and a PredRNN model (core/models/predrnn.py
structure: cell_list, zigzag memory, conv_last, scheduled-sampling mask)."""
import torch
from torch import nn


def _seq(conv, norm_shape, layer_norm):
    return nn.Sequential(conv, nn.LayerNorm(norm_shape)) if layer_norm else nn.Sequential(conv)


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0

        def conv(cin, cout):
            return nn.Conv2d(cin, cout, filter_size, stride=stride, padding=self.padding,
                             bias=False)

        self.conv_x = _seq(conv(in_channel, num_hidden * 7), [num_hidden * 7, width, width], layer_norm)
        self.conv_h = _seq(conv(num_hidden, num_hidden * 4), [num_hidden * 4, width, width], layer_norm)
        self.conv_m = _seq(conv(num_hidden, num_hidden * 3), [num_hidden * 3, width, width], layer_norm)
        self.conv_o = _seq(conv(num_hidden * 2, num_hidden), [num_hidden, width, width], layer_norm)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, 1, stride=1, padding=0, bias=False)

    def gates(self, x_t, h_t, c_t, m_t):
        x_concat, h_concat, m_concat = self.conv_x(x_t), self.conv_h(h_t), self.conv_m(m_t)
        i_x, f_x, g_x, i_x_p, f_x_p, g_x_p, o_x = torch.split(x_concat, self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(h_concat, self.num_hidden, dim=1)
        i_m, f_m, g_m = torch.split(m_concat, self.num_hidden, dim=1)
        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + self._forget_bias)
        g_t = torch.tanh(g_x + g_h)
        delta_c = i_t * g_t
        c_new = f_t * c_t + delta_c
        i_t_p = torch.sigmoid(i_x_p + i_m)
        f_t_p = torch.sigmoid(f_x_p + f_m + self._forget_bias)
        g_t_p = torch.tanh(g_x_p + g_m)
        delta_m = i_t_p * g_t_p
        m_new = f_t_p * m_t + delta_m
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m

    def forward(self, x_t, h_t, c_t, m_t):
        h_new, c_new, m_new, _, _ = self.gates(x_t, h_t, c_t, m_t)
        return h_new, c_new, m_new


class RNN(nn.Module):
    """PredRNN: frames (B, T, C, H, W) and a mask (B, T_out-1, C, H, W) of true-frame use."""

    cell_class = SpatioTemporalLSTMCell

    def __init__(self, num_layers, num_hidden, frame_channel, width, filter_size=5, stride=1,
                 layer_norm=False, input_length=3):
        super().__init__()
        self.frame_channel, self.num_layers, self.num_hidden = frame_channel, num_layers, num_hidden
        self.input_length = input_length
        self.cell_list = nn.ModuleList(
            self.cell_class(frame_channel if i == 0 else num_hidden[i - 1], num_hidden[i], width,
                            filter_size, stride, layer_norm)
            for i in range(num_layers))
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, 1, stride=1, padding=0,
                                   bias=False)

    def forward(self, frames, mask_true):
        b, t, _, height, width = frames.shape
        h_t = [frames.new_zeros(b, self.num_hidden[i], height, width) for i in range(self.num_layers)]
        c_t = list(h_t)
        memory = frames.new_zeros(b, self.num_hidden[0], height, width)
        next_frames = []
        x_gen = None
        for step in range(t - 1):
            if step < self.input_length:
                net = frames[:, step]
            else:
                m = mask_true[:, step - self.input_length]
                net = m * frames[:, step] + (1 - m) * x_gen
            h_t[0], c_t[0], memory = self.cell_list[0](net, h_t[0], c_t[0], memory)
            for i in range(1, self.num_layers):
                h_t[i], c_t[i], memory = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
            x_gen = self.conv_last(h_t[self.num_layers - 1])
            next_frames.append(x_gen)
        return torch.stack(next_frames, dim=1)


class SpatioTemporalLSTMCellV2(SpatioTemporalLSTMCell):
    """PredRNN-v2's cell (thuml names it SpatioTemporalLSTMCell in its own file)."""

    def forward(self, x_t, h_t, c_t, m_t):
        return self.gates(x_t, h_t, c_t, m_t)


SpatioTemporalLSTMCellV2.__name__ = "SpatioTemporalLSTMCell"


class RNNv2(RNN):
    """PredRNN-v2 (core/models/predrnn_v2.py): also returns the decoupling loss."""

    cell_class = SpatioTemporalLSTMCellV2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter = nn.Conv2d(self.num_hidden[0], self.num_hidden[0], 1, bias=False)

    def forward(self, frames, mask_true):
        b, t, _, height, width = frames.shape
        h_t = [frames.new_zeros(b, self.num_hidden[i], height, width) for i in range(self.num_layers)]
        c_t = list(h_t)
        memory = frames.new_zeros(b, self.num_hidden[0], height, width)
        next_frames, decouple = [], []
        for step in range(t - 1):
            net = frames[:, step] if step < self.input_length else (
                mask_true[:, step - self.input_length] * frames[:, step]
                + (1 - mask_true[:, step - self.input_length]) * x_gen)  # noqa: F821
            for i in range(self.num_layers):
                inp = net if i == 0 else h_t[i - 1]
                h_t[i], c_t[i], memory, dc, dm = self.cell_list[i](inp, h_t[i], c_t[i], memory)
                dc = nn.functional.normalize(self.adapter(dc).flatten(2), dim=2)
                dm = nn.functional.normalize(self.adapter(dm).flatten(2), dim=2)
                decouple.append(torch.mean(torch.abs(torch.cosine_similarity(dc, dm, dim=2))))
            x_gen = self.conv_last(h_t[-1])
            next_frames.append(x_gen)
        return torch.stack(next_frames, dim=1), torch.mean(torch.stack(decouple))
