"""mazhf/MS-RNN models/predrnn_plus2.py: PredRNN_Plus2_Cell (PredRNN++: a causal LSTM whose
gate stages are each one biased convolution over a concatenation, no forget bias, a 1x1
convolution of m inside the m update, a tanh output gate, and a gradient highway unit run
inside the cell when its layer index is 1) and the layer stack that passes m up the layers
and on to the next step. hiddens/m None mean zeros (the original's are CUDA float32; here
they follow x)."""
import torch
from torch import nn


class PredRNN_Plus2_Cell(nn.Module):
    def __init__(self, input_channel, output_channel, b_h_w, kernel_size, stride, padding):
        super().__init__()
        self._batch_size, self._state_height, self._state_width = b_h_w

        def conv(cin, cout, k=kernel_size, s=stride, p=padding):
            return nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p)

        C = output_channel
        self._conv_x_h_c = conv(3 * input_channel, 3 * C)
        self._conv_x_c_m = conv(3 * input_channel, 3 * C)
        self._conv_m = conv(input_channel, C, 1, 1, 0)
        self._conv_o = conv(3 * input_channel, C)
        self._conv_c_m = conv(2 * input_channel, C, 1, 1, 0)
        self._conv_x = conv(input_channel, 2 * C)
        self._conv_z = conv(input_channel, 2 * C)
        self._input_channel = input_channel
        self._output_channel = output_channel

    def forward(self, x, m, hiddens, l):  # noqa: E741 (MS-RNN's name: keyword calls)
        shape = (x.shape[0], self._input_channel, self._state_height, self._state_width)
        if hiddens is None:
            h, c, z = (x.new_zeros(shape) for _ in range(3))
        else:
            h, c, z = hiddens
        if m is None:
            m = x.new_zeros(x.shape[0], self._output_channel, *shape[2:])
        next_z = None
        if l == 1:  # the gradient highway sits in the second layer's cell
            p, s = torch.chunk(self._conv_x(x) + self._conv_z(z), 2, dim=1)
            s = torch.sigmoid(s)
            next_z = s * torch.tanh(p) + (1 - s) * z
            x = next_z
        i, f, g = torch.chunk(self._conv_x_h_c(torch.cat([x, h, c], 1)), 3, dim=1)
        next_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        i, f, g = torch.chunk(self._conv_x_c_m(torch.cat([x, next_c, m], 1)), 3, dim=1)
        next_m = torch.sigmoid(f) * torch.tanh(self._conv_m(m)) + torch.sigmoid(i) * torch.tanh(g)
        o = torch.tanh(self._conv_o(torch.cat([x, next_c, next_m], 1)))
        next_h = o * torch.tanh(self._conv_c_m(torch.cat([next_c, next_m], 1)))
        return next_h, next_m, [next_h, next_c, next_z]


class PredRNN_Plus2(nn.Module):
    """The stack over a sequence (B, T, Cin, H, W) with MS-RNN's embed/fc 1x1 convolutions."""

    def __init__(self, in_channels, channels, b_h_w, n_layers=3, kernel_size=3):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, channels, 1)
        self.fc = nn.Conv2d(channels, in_channels, 1)
        self.lstm = nn.ModuleList(
            PredRNN_Plus2_Cell(channels, channels, b_h_w, kernel_size, 1, kernel_size // 2)
            for _ in range(n_layers))

    def forward(self, frames):
        layer_hiddens, m, outputs = None, None, []
        for t in range(frames.shape[1]):
            x = self.embed(frames[:, t])
            next_hiddens = []
            for i, cell in enumerate(self.lstm):
                x, m, hiddens = cell(x, m, None if layer_hiddens is None else layer_hiddens[i],
                                     i)
                next_hiddens.append(hiddens)
            layer_hiddens = next_hiddens
            outputs.append(self.fc(x))
        return torch.stack(outputs, dim=1)
