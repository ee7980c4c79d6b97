"""mazhf/MS-RNN models/predrnn.py and predrnn_v2.py: PredRNN_Cell and PredRNN_V2_Cell (the
ST-LSTM with one biased convolution per source: x2h, h2h, c2o, x2h_m, m2h_m, m2o, c_m; no
forget bias; hiddens/m None mean zeros) and their layer stacks, the spatiotemporal memory m
passed up the layers and on to the next step (V2: adapter and decoupling loss)."""
import torch
from torch import nn


class PredRNN_Cell(nn.Module):
    def __init__(self, input_channel, output_channel, b_h_w, kernel_size, stride, padding):
        super().__init__()
        self._batch_size, self._state_height, self._state_width = b_h_w

        def conv(cin, cout, k=kernel_size, s=stride, p=padding):
            return nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p)

        self._conv_x2h = conv(input_channel, output_channel * 4)
        self._conv_h2h = conv(input_channel, output_channel * 4)
        self._conv_c2o = conv(input_channel, output_channel)
        self._conv_x2h_m = conv(input_channel, output_channel * 3)
        self._conv_m2h_m = conv(input_channel, output_channel * 3)
        self._conv_m2o = conv(input_channel, output_channel)
        self._conv_c_m = conv(2 * input_channel, output_channel, 1, 1, 0)
        self._input_channel = input_channel
        self._output_channel = output_channel

    def step(self, x, m, hiddens):
        shape = (x.shape[0], self._input_channel, self._state_height, self._state_width)
        h, c = hiddens if hiddens is not None else (x.new_zeros(shape), x.new_zeros(shape))
        if m is None:
            m = x.new_zeros(x.shape[0], self._output_channel, *shape[2:])
        i, f, g, o = torch.chunk(self._conv_x2h(x) + self._conv_h2h(h), 4, dim=1)
        delta_c = torch.sigmoid(i) * torch.tanh(g)
        next_c = torch.sigmoid(f) * c + delta_c
        i_m, f_m, g_m = torch.chunk(self._conv_x2h_m(x) + self._conv_m2h_m(m), 3, dim=1)
        delta_m = torch.sigmoid(i_m) * torch.tanh(g_m)
        next_m = torch.sigmoid(f_m) * m + delta_m
        o = torch.sigmoid(o + self._conv_c2o(next_c) + self._conv_m2o(next_m))
        next_h = o * torch.tanh(self._conv_c_m(torch.cat([next_c, next_m], dim=1)))
        return next_h, next_m, [next_h, next_c], delta_c, delta_m

    def forward(self, x, m, hiddens):
        return self.step(x, m, hiddens)[:3]


class PredRNN_V2_Cell(PredRNN_Cell):
    def forward(self, x, m, hiddens):
        return self.step(x, m, hiddens)


class PredRNN(nn.Module):
    """The stack over a sequence (B, T, Cin, H, W) with MS-RNN's embed/fc 1x1 convolutions;
    returns the outputs (and, for V2, the decoupling losses (T, layers, B, C))."""

    def __init__(self, in_channels, channels, b_h_w, n_layers=2, kernel_size=3, v2=False):
        super().__init__()
        self.v2 = v2
        self.embed = nn.Conv2d(in_channels, channels, 1)
        self.fc = nn.Conv2d(channels, in_channels, 1)
        cell = PredRNN_V2_Cell if v2 else PredRNN_Cell
        self.lstm = nn.ModuleList(cell(channels, channels, b_h_w, kernel_size, 1,
                                       kernel_size // 2) for _ in range(n_layers))
        if v2:
            self.adapter = nn.Conv2d(channels, channels, 1)

    def forward(self, frames):
        layer_hiddens, m, outputs, losses = None, None, [], []
        for t in range(frames.shape[1]):
            x = self.embed(frames[:, t])
            next_hiddens, loss = [], []
            for i, cell in enumerate(self.lstm):
                out = cell(x, m, None if layer_hiddens is None else layer_hiddens[i])
                x, m, hiddens = out[:3]
                next_hiddens.append(hiddens)
                if self.v2:
                    dc, dm = (nn.functional.normalize(self.adapter(d).flatten(2), dim=2)
                              for d in out[3:])
                    loss.append(torch.abs(torch.cosine_similarity(dc, dm, dim=2)))
            layer_hiddens = next_hiddens
            outputs.append(self.fc(x))
            if self.v2:
                losses.append(torch.stack(loss))
        out = torch.stack(outputs, dim=1)
        return (out, torch.stack(losses)) if self.v2 else out
