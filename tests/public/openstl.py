"""chengtan9907/OpenSTL: PredRNN++'s ``CausalLSTMCell`` and ``GHU``
(openstl/modules/predrnnpp_modules.py) and the ``PredRNNpp_Model`` that stacks them
(openstl/models/predrnnpp_model.py), re-created from their structure: constructor
signatures, attribute names and definition order, gate splits and forward signatures."""
from types import SimpleNamespace

import torch
from torch import nn


def _stack(cin, cout, k, stride, norm_shape, layer_norm):
    conv = nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.LayerNorm(norm_shape)) if layer_norm else nn.Sequential(conv)


class CausalLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0
        n = num_hidden

        def block(cin, cout):
            return _stack(cin, cout, filter_size, stride, [cout, height, width], layer_norm)

        self.conv_x = block(in_channel, 7 * n)
        self.conv_h = block(n, 4 * n)
        self.conv_c = block(n, 3 * n)
        self.conv_m = block(n, 3 * n)
        self.conv_o = block(2 * n, n)  # built, never called
        self.conv_c2m = block(n, 4 * n)
        self.conv_om = block(n, n)
        self.conv_last = nn.Conv2d(2 * n, n, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        n = self.num_hidden
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(self.conv_x(x_t), n, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), n, dim=1)
        i_c, f_c, g_c = torch.split(self.conv_c(c_t), n, dim=1)
        i_m, f_m, m_m = torch.split(self.conv_m(m_t), n, dim=1)
        i = torch.sigmoid(i_x + i_h + i_c)
        f = torch.sigmoid(f_x + f_h + f_c + self._forget_bias)
        g = torch.tanh(g_x + g_h + g_c)
        c_new = f * c_t + i * g
        # conv_c2m's split order differs from the others: i, g, f, o
        i_c2, g_c2, f_c2, o_c = torch.split(self.conv_c2m(c_new), n, dim=1)
        i_p = torch.sigmoid(i_xp + i_m + i_c2)
        f_p = torch.sigmoid(f_xp + f_m + f_c2 + self._forget_bias)
        g_p = torch.tanh(g_xp + g_c2)
        m_new = f_p * torch.tanh(m_m) + i_p * g_p
        o = torch.tanh(o_x + o_h + o_c + self.conv_om(m_new))
        h_new = o * torch.tanh(self.conv_last(torch.cat((c_new, m_new), 1)))
        return h_new, c_new, m_new


class GHU(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm,
                 initializer=0.001):
        super().__init__()
        self.filter_size, self.padding = filter_size, filter_size // 2
        self.num_hidden, self.layer_norm = num_hidden, layer_norm
        # (sic) the LayerNorm covers num_hidden channels of a 2 * num_hidden output
        self.z_concat = _stack(in_channel, 2 * num_hidden, filter_size, stride,
                               [num_hidden, height, width], layer_norm)
        self.x_concat = _stack(in_channel, 2 * num_hidden, filter_size, stride,
                               [num_hidden, height, width], layer_norm)
        if initializer != -1:
            self.initializer = initializer
            self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, -self.initializer, self.initializer)

    def _init_state(self, inputs):
        return torch.zeros_like(inputs)

    def forward(self, x, z):
        if z is None:
            z = self._init_state(x)
        gates = self.x_concat(x) + self.z_concat(z)
        p, u = torch.split(gates, self.num_hidden, dim=1)
        p, u = torch.tanh(p), torch.sigmoid(u)
        return u * p + (1 - u) * z


def reshape_patch(frames, patch_size):
    """OpenSTL's channels-last patch reshaping: (B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C)."""
    b, t, h, w, c = frames.shape
    p = patch_size
    x = frames.reshape(b, t, h // p, p, w // p, p, c).transpose(3, 4)
    return x.reshape(b, t, h // p, w // p, p * p * c)


def reshape_patch_back(patches, patch_size):
    b, t, hp, wp, pc = patches.shape
    p = patch_size
    c = pc // (p * p)
    x = patches.reshape(b, t, hp, wp, p, p, c).transpose(3, 4)
    return x.reshape(b, t, hp * p, wp * p, c)


class PredRNNpp_Model(nn.Module):
    """frames (B, T, H/p, W/p, p*p*C) (patched, channels last) and mask_true (B, T_out - 1,
    H/p, W/p, p*p*C); returns the T - 1 next frames in the same layout."""

    def __init__(self, num_layers, num_hidden, configs):
        super().__init__()
        T, C, H, W = configs.in_shape
        self.configs = configs
        self.frame_channel = configs.patch_size * configs.patch_size * C
        self.num_layers, self.num_hidden = num_layers, num_hidden
        height, width = H // configs.patch_size, W // configs.patch_size
        self.gradient_highway = GHU(num_hidden[0], num_hidden[0], height, width,
                                    configs.filter_size, configs.stride, configs.layer_norm)
        self.cell_list = nn.ModuleList(
            CausalLSTMCell(self.frame_channel if i == 0 else num_hidden[i - 1], num_hidden[i],
                           height, width, configs.filter_size, configs.stride,
                           configs.layer_norm)
            for i in range(num_layers))
        self.conv_last = nn.Conv2d(num_hidden[-1], self.frame_channel, 1, stride=1, padding=0,
                                   bias=False)

    def forward(self, frames_tensor, mask_true):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        b, _, _, h, w = frames.shape
        cfg = self.configs
        h_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        c_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        memory = frames.new_zeros(b, self.num_hidden[0], h, w)
        z_t, x_gen, out = None, None, []
        for t in range(cfg.pre_seq_length + cfg.aft_seq_length - 1):
            if t < cfg.pre_seq_length:
                net = frames[:, t]
            else:
                m = mask[:, t - cfg.pre_seq_length]
                net = m * frames[:, t] + (1 - m) * x_gen
            h_t[0], c_t[0], memory = self.cell_list[0](net, h_t[0], c_t[0], memory)
            z_t = self.gradient_highway(h_t[0], z_t)
            h_t[1], c_t[1], memory = self.cell_list[1](z_t, h_t[1], c_t[1], memory)
            for i in range(2, self.num_layers):
                h_t[i], c_t[i], memory = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
            x_gen = self.conv_last(h_t[-1])
            out.append(x_gen)
        return torch.stack(out, dim=1).permute(0, 1, 3, 4, 2).contiguous()


def configs(in_shape, patch_size, filter_size, pre, aft, layer_norm=0):
    return SimpleNamespace(in_shape=in_shape, patch_size=patch_size, filter_size=filter_size,
                           stride=1, layer_norm=layer_norm, pre_seq_length=pre,
                           aft_seq_length=aft, reverse_scheduled_sampling=0)
