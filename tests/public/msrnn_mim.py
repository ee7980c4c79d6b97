"""mazhf/MS-RNN: re-creation of MIM_Cell (models/mim.py and models/ms_mim.py) and of the MIM
stack of models/mim.py with the repository's Model loop (embed/fc 1x1 convolutions, the
memory m carried across layers and steps, xt_1 = the layer below's previous hidden state),
written from their structure for the tests: the same constructor signature, attribute
names, registration order and arithmetic (biased convolutions, gate order i, f, g(, o), no
forget bias, the l == 0 branch). One difference: the original makes missing states as
float32 CUDA tensors, this one like x (the tests run on CPU)."""
import torch
from torch import nn


class MIM_Cell(nn.Module):
    def __init__(self, input_channel, output_channel, b_h_w, kernel_size, stride, padding):
        super().__init__()
        self._batch_size, self._state_height, self._state_width = b_h_w

        def conv(gates):
            return nn.Conv2d(input_channel, gates * output_channel, kernel_size=kernel_size,
                             stride=stride, padding=padding)

        # (name, gates) in the original's order of registration
        for name, gates in (("n", 3), ("n2h_n", 3), ("diff2o", 1), ("n2o", 1), ("s", 4),
                            ("c2h_s", 4), ("s2o", 1), ("x2h", 4), ("h2h", 4), ("c2o", 1),
                            ("m", 3), ("m2h_m", 3), ("m2o", 1)):
            if name in ("n", "s", "m"):
                name = f"x2h_{name}"
            setattr(self, f"_conv_{name}", conv(gates))
        self._conv_c_m = nn.Conv2d(2 * output_channel, output_channel, kernel_size=1,
                                   stride=1, padding=0)
        self._input_channel = input_channel
        self._output_channel = output_channel

    def _zeros(self, x, channels):
        return torch.zeros(x.shape[0], channels, self._state_height, self._state_width,
                           dtype=x.dtype, device=x.device)

    @staticmethod
    def _lstm(z, c_prev, gates):
        parts = torch.chunk(z, gates, dim=1)
        i, f, g = torch.sigmoid(parts[0]), torch.sigmoid(parts[1]), torch.tanh(parts[2])
        return f * c_prev + i * g, parts

    def forward(self, x, xt_1, m, hiddens, l):  # noqa: E741 (the original's name)
        if hiddens is None:
            h, c, n, s = (self._zeros(x, self._input_channel) for _ in range(4))
        else:
            h, c, n, s = hiddens
        xt_1 = self._zeros(x, self._output_channel) if xt_1 is None else xt_1
        m = self._zeros(x, self._output_channel) if m is None else m
        diff = x - xt_1
        next_n, _ = self._lstm(self._conv_x2h_n(diff) + self._conv_n2h_n(n), n, 3)
        D = torch.sigmoid(self._conv_diff2o(diff) + self._conv_n2o(next_n)) * torch.tanh(next_n)
        next_s, parts_s = self._lstm(self._conv_x2h_s(D) + self._conv_c2h_s(c), s, 4)
        T = torch.sigmoid(parts_s[3] + self._conv_s2o(next_s)) * torch.tanh(next_s)
        lstm_c, parts = self._lstm(self._conv_x2h(x) + self._conv_h2h(h), c, 4)
        if l == 0:
            next_c = lstm_c
        else:
            next_c = T + torch.sigmoid(parts[0]) * torch.tanh(parts[2])
        next_m, _ = self._lstm(self._conv_x2h_m(x) + self._conv_m2h_m(m), m, 3)
        o = torch.sigmoid(parts[3] + self._conv_c2o(next_c) + self._conv_m2o(next_m))
        next_h = o * torch.tanh(self._conv_c_m(torch.cat([next_c, next_m], dim=1)))
        return next_h, next_m, [next_h, next_c, next_n, next_s]


class MIM(nn.Module):
    """models/mim.py's MIM with the Model's loop over steps (no scheduled sampling)."""

    def __init__(self, frame_channel, hidden, b_h_w, num_layers=2, kernel_size=3):
        super().__init__()
        self.lstm = nn.ModuleList(
            MIM_Cell(hidden, hidden, list(b_h_w), kernel_size, 1, kernel_size // 2)
            for _ in range(num_layers))
        self.embed = nn.Conv2d(frame_channel, hidden, 1)
        self.fc = nn.Conv2d(hidden, frame_channel, 1)

    def step(self, x, m, layer_hiddens):
        x = self.embed(x)
        next_layer_hiddens = []
        for layer, cell in enumerate(self.lstm):
            hiddens = None if layer_hiddens is None else layer_hiddens[layer]
            xt_1 = (layer_hiddens[layer - 1][0] if layer_hiddens is not None and layer != 0
                    else None)
            x, m, next_hiddens = cell(x, xt_1, m, hiddens, layer)
            next_layer_hiddens.append(next_hiddens)
        return self.fc(x), m, next_layer_hiddens

    def forward(self, frames):
        m, hiddens, outputs = None, None, []
        for t in range(frames.shape[1]):
            y, m, hiddens = self.step(frames[:, t], m, hiddens)
            outputs.append(y)
        return torch.stack(outputs, dim=1)
