"""mazhf/MS-RNN: MK_LSTM_Cell and the MS_LSTM mirrored pyramid (max-pool down, bilinear up,
skip adds), with embed/fc 1x1 convolutions as the repository's Model passes them."""
import torch
from torch import nn


class MK_LSTM_Cell(nn.Module):
    def __init__(self, input_channel, output_channel, b_h_w, kernel_size, stride, padding):
        super().__init__()
        self._batch_size, self._state_height, self._state_width = b_h_w

        def conv(cin, cout, k):
            return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2)

        self._conv_x2h_3 = conv(input_channel, output_channel * 4, 3)
        self._conv_h2h_3 = conv(input_channel, output_channel * 4, 3)
        self._conv_x2h_5 = conv(input_channel, output_channel * 4, 5)
        self._conv_h2h_5 = conv(input_channel, output_channel * 4, 5)
        self._conv_c2o_3 = conv(input_channel, output_channel, 3)
        self._conv_c2o_5 = conv(input_channel, output_channel, 5)
        self._conv_out = conv(input_channel * 2, output_channel, 1)
        self._input_channel = input_channel
        self._output_channel = output_channel

    def forward(self, x, hiddens):
        if hiddens is None:
            shape = (x.shape[0], self._input_channel, self._state_height, self._state_width)
            h, c_3, c_5 = (torch.zeros(shape, dtype=x.dtype, device=x.device) for _ in range(3))
        else:
            h, c_3, c_5 = hiddens
        i_3, f_3, g_3, o_3 = torch.chunk(self._conv_x2h_3(x) + self._conv_h2h_3(h), 4, dim=1)
        i_5, f_5, g_5, o_5 = torch.chunk(self._conv_x2h_5(x) + self._conv_h2h_5(h), 4, dim=1)
        next_c_3 = torch.sigmoid(f_3) * c_3 + torch.sigmoid(i_3) * torch.tanh(g_3)
        next_c_5 = torch.sigmoid(f_5) * c_5 + torch.sigmoid(i_5) * torch.tanh(g_5)
        o = torch.sigmoid(o_3 + o_5 + self._conv_c2o_3(next_c_3) + self._conv_c2o_5(next_c_5))
        next_h = o * torch.tanh(self._conv_out(torch.cat([next_c_3, next_c_5], dim=1)))
        return next_h, [next_h, next_c_3, next_c_5]


class MS_LSTM(nn.Module):
    def __init__(self, frame_channel, hidden, b_h_w):
        super().__init__()
        B, H, W = b_h_w
        sizes = [(H, W), (H // 2, W // 2), (H // 4, W // 4), (H // 4, W // 4), (H // 2, W // 2), (H, W)]
        self.lstm = nn.ModuleList(MK_LSTM_Cell(hidden, hidden, [B, *s], 3, 1, 1) for s in sizes)
        self.downs = nn.ModuleList([nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2)])
        self.ups = nn.ModuleList([nn.Upsample(scale_factor=2, mode="bilinear"),
                                  nn.Upsample(scale_factor=2, mode="bilinear")])
        self.embed = nn.Conv2d(frame_channel, hidden, 1)
        self.fc = nn.Conv2d(hidden, frame_channel, 1)

    def step(self, x, layer_hiddens):
        x = self.embed(x)
        next_layer_hiddens, out = [], []
        for l, cell in enumerate(self.lstm):
            x, next_hiddens = cell(x, None if layer_hiddens is None else layer_hiddens[l])
            out.append(x)
            if l in (0, 1):
                x = self.downs[l](x)
            elif l == 3:
                x = self.ups[0](x) + out[1]
            elif l == 4:
                x = self.ups[1](x) + out[0]
            next_layer_hiddens.append(next_hiddens)
        return self.fc(x), next_layer_hiddens

    def forward(self, frames):
        hiddens, outputs = None, []
        for t in range(frames.shape[1]):
            y, hiddens = self.step(frames[:, t], hiddens)
            outputs.append(y)
        return torch.stack(outputs, dim=1)


class MKStack(nn.Module):
    """MK_LSTM_Cell layers stacked plainly (no pyramid), with the 1x1 embed and head; runs at
    any size, where MS_LSTM's skip adds need H and W divisible by 4."""

    def __init__(self, frame_channel, hidden, b_h_w, num_layers=2):
        super().__init__()
        self.embed = nn.Conv2d(frame_channel, hidden, 1)
        self.cells = nn.ModuleList(MK_LSTM_Cell(hidden, hidden, list(b_h_w), 3, 1, 1)
                                   for _ in range(num_layers))
        self.fc = nn.Conv2d(hidden, frame_channel, 1)

    def forward(self, frames):
        hiddens, outs = [None] * len(self.cells), []
        for t in range(frames.shape[1]):
            x = self.embed(frames[:, t])
            for i, cell in enumerate(self.cells):
                x, hiddens[i] = cell(x, hiddens[i])
            outs.append(self.fc(x))
        return torch.stack(outs, 1)
