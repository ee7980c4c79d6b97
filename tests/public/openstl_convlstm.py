"""chengtan9907/OpenSTL: the ConvLSTM cell (openstl/modules/convlstm_modules.py: bias-free
conv_x, conv_h, optional LayerNorm over (4C, H, W), gate order i, f, g, o, no forget bias,
conv_o/conv_last built and never called), the PredRNN-v2 cell under OpenSTL's name, PhyDNet's
ConvLSTM cell, and the model structure around them (openstl/models/*_model.py: cell_list,
conv_last, frames given as (B, T, H, W, C) with a scheduled-sampling mask)."""
import torch
from torch import nn

from . import thuml


def _block(cin, cout, k, stride, layer_norm, height, width):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.LayerNorm([cout, height, width])) if layer_norm \
        else nn.Sequential(conv)


class ConvLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0  # (never read, as in OpenSTL)
        args = (filter_size, stride, layer_norm, height, width)
        self.conv_x = _block(in_channel, num_hidden * 4, *args)
        self.conv_h = _block(num_hidden, num_hidden * 4, *args)
        self.conv_o = _block(num_hidden * 2, num_hidden, *args)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, 1, stride=1, padding=0,
                                   bias=False)

    def forward(self, x_t, h_t, c_t):
        i_x, f_x, g_x, o_x = torch.split(self.conv_x(x_t), self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), self.num_hidden, dim=1)
        c_new = torch.sigmoid(f_x + f_h) * c_t + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
        return torch.sigmoid(o_x + o_h) * torch.tanh(c_new), c_new


class SpatioTemporalLSTMCellv2(thuml.SpatioTemporalLSTMCellV2):
    """OpenSTL's PredRNN-v2 cell: thuml's, with (height, width) in the constructor."""

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        assert height == width, "thuml's re-creation normalizes square frames"
        super().__init__(in_channel, num_hidden, width, filter_size, stride, layer_norm)


class PhyD_ConvLSTM_Cell(nn.Module):
    def __init__(self, input_shape, input_dim, hidden_dim, kernel_size, bias=1):
        super().__init__()
        self.height, self.width = input_shape
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        self.kernel_size = kernel_size
        self.padding = kernel_size[0] // 2, kernel_size[1] // 2
        self.bias = bias
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size,
                              padding=self.padding, bias=bias)

    def forward(self, x, hidden):
        h_cur, c_cur = hidden
        cc_i, cc_f, cc_o, cc_g = torch.split(self.conv(torch.cat([x, h_cur], dim=1)),
                                             self.hidden_dim, dim=1)
        c_next = torch.sigmoid(cc_f) * c_cur + torch.sigmoid(cc_i) * torch.tanh(cc_g)
        return torch.sigmoid(cc_o) * torch.tanh(c_next), c_next


class PhyD_ConvLSTM(nn.Module):
    """PhyDNet's stack: state kept in H, C lists across calls (first_timestep resets)."""

    def __init__(self, input_shape, input_dim, hidden_dims, n_layers, kernel_size):
        super().__init__()
        self.input_shape, self.hidden_dims, self.n_layers = input_shape, hidden_dims, n_layers
        self.cell_list = nn.ModuleList(
            PhyD_ConvLSTM_Cell(input_shape, input_dim if i == 0 else hidden_dims[i - 1],
                               hidden_dims[i], kernel_size) for i in range(n_layers))
        self.H, self.C = [], []

    def forward(self, input_, first_timestep=False):
        if first_timestep:
            b = input_.shape[0]
            self.H = [input_.new_zeros(b, d, *self.input_shape) for d in self.hidden_dims]
            self.C = [input_.new_zeros(b, d, *self.input_shape) for d in self.hidden_dims]
        for j, cell in enumerate(self.cell_list):
            self.H[j], self.C[j] = cell(input_ if j == 0 else self.H[j - 1], (self.H[j], self.C[j]))
        return (self.H, self.C), self.H


class RecurrentModel(nn.Module):
    """OpenSTL's ConvLSTM_Model / PredRNNv2_Model loop (patch_size 1, no reverse scheduled
    sampling): frames (B, T, H, W, C) and mask (B, T_out - 1, H, W, C) of true-frame use;
    returns the next frames (B, T - 1, H, W, C) (and PredRNN-v2's decoupling loss)."""

    def __init__(self, cell, num_layers, num_hidden, channels, height, width, filter_size=5,
                 stride=1, layer_norm=False, pre_seq_length=2):
        super().__init__()
        self.num_layers, self.num_hidden = num_layers, num_hidden
        self.pre_seq_length, self.v2 = pre_seq_length, cell is SpatioTemporalLSTMCellv2
        self.cell_list = nn.ModuleList(
            cell(channels if i == 0 else num_hidden[i - 1], num_hidden[i], height, width,
                 filter_size, stride, layer_norm) for i in range(num_layers))
        self.conv_last = nn.Conv2d(num_hidden[-1], channels, 1, stride=1, padding=0, bias=False)
        if self.v2:
            self.adapter = nn.Conv2d(num_hidden[0], num_hidden[0], 1, bias=False)

    def forward(self, frames_tensor, mask_true):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        b, t, _, height, width = frames.shape
        h_t = [frames.new_zeros(b, n, height, width) for n in self.num_hidden]
        c_t = list(h_t)
        memory = frames.new_zeros(b, self.num_hidden[0], height, width)
        next_frames, decouple = [], []
        for step in range(t - 1):
            if step < self.pre_seq_length:
                net = frames[:, step]
            else:
                m = mask_true[:, step - self.pre_seq_length]
                net = m * frames[:, step] + (1 - m) * x_gen  # noqa: F821
            for i in range(self.num_layers):
                inp = net if i == 0 else h_t[i - 1]
                if not self.v2:
                    h_t[i], c_t[i] = self.cell_list[i](inp, h_t[i], c_t[i])
                    continue
                h_t[i], c_t[i], memory, dc, dm = self.cell_list[i](inp, h_t[i], c_t[i], memory)
                dc = nn.functional.normalize(self.adapter(dc).flatten(2), dim=2)
                dm = nn.functional.normalize(self.adapter(dm).flatten(2), dim=2)
                decouple.append(torch.mean(torch.abs(torch.cosine_similarity(dc, dm, dim=2))))
            x_gen = self.conv_last(h_t[-1])
            next_frames.append(x_gen)
        out = torch.stack(next_frames, dim=0).permute(1, 0, 3, 4, 2).contiguous()
        return (out, torch.mean(torch.stack(decouple))) if self.v2 else out
