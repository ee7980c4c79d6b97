"""chengtan9907/OpenSTL: re-creation of MIM's modules (openstl/modules/mim_modules.py:
``MIMBlock``, ``MIMN``) and of its model (openstl/models/mim_model.py: ``MIM_Model``), written
from their structure for the tests: the same constructor signatures, attribute names,
registration order, arithmetic and quirks (the cross-call, detached ``convlstm_c`` of
MIMBlock; MIMS reading c as its hidden state; MIMN's unused conv_last; the discarded MIMN
call at t = 0)."""
from types import SimpleNamespace

import torch
from torch import nn


def _stack(cin, cout, k, stride, shape, layer_norm):
    conv = nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.LayerNorm(shape)) if layer_norm else nn.Sequential(conv)


def _stationarity(mod, x, h_t, c_t):
    """MIMN.forward / MIMBlock.MIMS (the same arithmetic in both classes)."""
    if h_t is None:
        h_t = torch.zeros_like(x)
    if c_t is None:
        c_t = torch.zeros_like(x)
    C = mod.num_hidden
    i_h, g_h, f_h, o_h = torch.split(mod.conv_h_concat(h_t), C, dim=1)
    i_c, f_c = torch.split(torch.mul(c_t.repeat(1, 2, 1, 1), mod.ct_weight), C, dim=1)
    i_, f_, g_, o_ = i_h + i_c, f_h + f_c, g_h, o_h
    if x is not None:
        i_x, g_x, f_x, o_x = torch.split(mod.conv_x_concat(x), C, dim=1)
        i_, f_, g_, o_ = i_ + i_x, f_ + f_x, g_ + g_x, o_ + o_x
    i_ = torch.sigmoid(i_)
    f_ = torch.sigmoid(f_ + mod._forget_bias)
    c_new = f_ * c_t + i_ * torch.tanh(g_)
    h_new = torch.sigmoid(o_ + torch.mul(c_new, mod.oc_weight)) * torch.tanh(c_new)
    return h_new, c_new


class MIMBlock(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.convlstm_c = None
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0
        self.ct_weight = nn.Parameter(torch.zeros(num_hidden * 2, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(num_hidden, height, width))
        C, hw = num_hidden, (height, width)

        def stack(cin, k_out):
            return _stack(cin, k_out * C, filter_size, stride, [k_out * C, *hw], layer_norm)

        self.conv_t_cc = stack(in_channel, 3)
        self.conv_s_cc = stack(C, 4)
        self.conv_x_cc = stack(C, 4)
        self.conv_h_concat = stack(C, 4)
        self.conv_x_concat = stack(C, 4)
        self.conv_last = nn.Conv2d(C * 2, C, kernel_size=1, stride=1, padding=0, bias=False)

    def MIMS(self, x, h_t, c_t):
        return _stationarity(self, x, h_t, c_t)

    def forward(self, x, diff_h, h, c, m):
        h = torch.zeros_like(x) if h is None else h
        c = torch.zeros_like(x) if c is None else c
        m = torch.zeros_like(x) if m is None else m
        diff_h = torch.zeros_like(x) if diff_h is None else diff_h
        C = self.num_hidden
        i_s, g_s, f_s, o_s = torch.split(self.conv_s_cc(m), C, dim=1)
        i_t, g_t, o_t = torch.split(self.conv_t_cc(h), C, dim=1)
        i_x, g_x, f_x, o_x = torch.split(self.conv_x_cc(x), C, dim=1)
        i = torch.sigmoid(i_x + i_t)
        i_ = torch.sigmoid(i_x + i_s)
        g = torch.tanh(g_x + g_t)
        g_ = torch.tanh(g_x + g_s)
        f_ = torch.sigmoid(f_x + f_s + self._forget_bias)
        o = torch.sigmoid(o_x + o_t + o_s)
        new_m = f_ * m + i_ * g_
        carried = None if self.convlstm_c is None else self.convlstm_c.detach()
        c, self.convlstm_c = self.MIMS(diff_h, c, carried)
        new_c = c + i * g
        new_h = o * torch.tanh(self.conv_last(torch.cat((new_c, new_m), 1)))
        return new_h, new_c, new_m


class MIMN(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0
        self.ct_weight = nn.Parameter(torch.zeros(num_hidden * 2, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(num_hidden, height, width))
        C, hw = num_hidden, (height, width)
        self.conv_h_concat = _stack(in_channel, 4 * C, filter_size, stride, [4 * C, *hw],
                                    layer_norm)
        self.conv_x_concat = _stack(in_channel, 4 * C, filter_size, stride, [4 * C, *hw],
                                    layer_norm)
        self.conv_last = nn.Conv2d(C * 2, C, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x, h_t, c_t):
        return _stationarity(self, x, h_t, c_t)


class SpatioTemporalLSTMCell(nn.Module):
    """OpenSTL's predrnn_modules.SpatioTemporalLSTMCell (thuml's current cell with
    (height, width) LayerNorm shapes): layer 0 of MIM_Model."""

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0
        C, hw = num_hidden, (height, width)

        def stack(cin, cout):
            return _stack(cin, cout, filter_size, stride, [cout, *hw], layer_norm)

        self.conv_x = stack(in_channel, 7 * C)
        self.conv_h = stack(C, 4 * C)
        self.conv_m = stack(C, 3 * C)
        self.conv_o = stack(2 * C, C)
        self.conv_last = nn.Conv2d(C * 2, C, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        C = self.num_hidden
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(self.conv_x(x_t), C, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), C, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m_t), C, dim=1)
        c_new = (torch.sigmoid(f_x + f_h + self._forget_bias) * c_t
                 + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h))
        m_new = (torch.sigmoid(f_xp + f_m + self._forget_bias) * m_t
                 + torch.sigmoid(i_xp + i_m) * torch.tanh(g_xp + g_m))
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        return o_t * torch.tanh(self.conv_last(mem)), c_new, m_new


class MIM_Model(nn.Module):
    """openstl/models/mim_model.py: layer 0 an ST-LSTM, layers 1.. MIMBlocks, MIMN "diff"
    modules between layers, zigzag memory, frames (B, T, H', W', C') already patch-reshaped."""

    def __init__(self, num_layers, num_hidden, configs):
        super().__init__()
        T, C, H, W = configs.in_shape
        self.configs = configs
        self.frame_channel = configs.patch_size * configs.patch_size * C
        self.num_layers, self.num_hidden = num_layers, num_hidden
        height, width = H // configs.patch_size, W // configs.patch_size
        layers, diffs = [], []
        for i in range(num_layers):
            cin = self.frame_channel if i == 0 else num_hidden[i - 1]
            cls = SpatioTemporalLSTMCell if i < 1 else MIMBlock
            layers.append(cls(cin, num_hidden[i], height, width, configs.filter_size,
                              configs.stride, configs.layer_norm))
        for i in range(num_layers - 1):
            diffs.append(MIMN(num_hidden[i], num_hidden[i + 1], height, width,
                              configs.filter_size, configs.stride, configs.layer_norm))
        self.stlstm_layer = nn.ModuleList(layers)
        self.stlstm_layer_diff = nn.ModuleList(diffs)
        self.conv_last = nn.Conv2d(num_hidden[num_layers - 1], self.frame_channel,
                                   kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, frames_tensor, mask_true):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        batch, height, width = frames.shape[0], frames.shape[3], frames.shape[4]
        cfg = self.configs
        h_t, c_t, hidden_diff, cell_diff = [], [], [], []
        for i in range(self.num_layers):
            zeros = torch.zeros([batch, self.num_hidden[i], height, width])
            h_t.append(zeros)
            c_t.append(zeros)
            hidden_diff.append(None)
            cell_diff.append(None)
        st_memory = torch.zeros([batch, self.num_hidden[0], height, width])
        next_frames = []
        x_gen = None
        for t in range(cfg.pre_seq_length + cfg.aft_seq_length - 1):
            if t < cfg.pre_seq_length:
                net = frames[:, t]
            else:
                k = t - cfg.pre_seq_length
                net = mask_true[:, k] * frames[:, t] + (1 - mask_true[:, k]) * x_gen
            preh = h_t[0]
            h_t[0], c_t[0], st_memory = self.stlstm_layer[0](net, h_t[0], c_t[0], st_memory)
            for i in range(1, self.num_layers):
                if t > 0:
                    if i == 1:
                        hidden_diff[0], cell_diff[0] = self.stlstm_layer_diff[0](
                            h_t[0] - preh, hidden_diff[0], cell_diff[0])
                    else:
                        hidden_diff[i - 1], cell_diff[i - 1] = self.stlstm_layer_diff[i - 1](
                            hidden_diff[i - 2], hidden_diff[i - 1], cell_diff[i - 1])
                else:
                    self.stlstm_layer_diff[i - 1](torch.zeros_like(h_t[i - 1]), None, None)
                h_t[i], c_t[i], st_memory = self.stlstm_layer[i](
                    h_t[i - 1], hidden_diff[i - 1], h_t[i], c_t[i], st_memory)
            x_gen = self.conv_last(h_t[self.num_layers - 1])
            next_frames.append(x_gen)
        return torch.stack(next_frames, dim=0).permute(1, 0, 3, 4, 2).contiguous()


def configs(**kw):
    base = dict(in_shape=(10, 1, 16, 16), patch_size=4, filter_size=5, stride=1,
                layer_norm=False, pre_seq_length=10, aft_seq_length=10,
                reverse_scheduled_sampling=0)
    base.update(kw)
    return SimpleNamespace(**base)
