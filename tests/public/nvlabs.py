"""NVlabs/conv-tt-lstm (code_opt): stateful ConvLSTMCell and ConvTTLSTMCell (ring buffer of
hidden states, layers_ as Conv2d over the channel-concatenated window) and a ConvLSTMNet-like
stack that drives them with first_step."""
import torch
from torch import nn
from torch.nn.modules import utils


def _gates(concat_conv, hidden_channels, cell_states):
    cc_i, cc_f, cc_o, cc_g = torch.split(concat_conv, hidden_channels, dim=1)
    i, f, o, g = torch.sigmoid(cc_i), torch.sigmoid(cc_f), torch.sigmoid(cc_o), torch.tanh(cc_g)
    cell_states = f * cell_states + i * g
    return o * torch.tanh(cell_states), cell_states


class ConvLSTMCell(nn.Module):
    def __init__(self, input_channels, hidden_channels, kernel_size=5, bias=True):
        super().__init__()
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        kernel_size = utils._pair(kernel_size)
        padding = kernel_size[0] // 2, kernel_size[1] // 2
        self.conv = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels,
                              kernel_size=kernel_size, padding=padding, bias=bias)
        self.hidden_states, self.cell_state = None, None

    def initialize(self, inputs):
        batch_size, _, height, width = inputs.size()
        self.hidden_states = torch.zeros(batch_size, self.hidden_channels, height, width,
                                         device=inputs.device)
        self.cell_states = torch.zeros(batch_size, self.hidden_channels, height, width,
                                       device=inputs.device)

    def forward(self, inputs, first_step=False, checkpointing=False):
        if first_step:
            self.initialize(inputs)
        concat_conv = self.conv(torch.cat([inputs, self.hidden_states], dim=1))
        self.hidden_states, self.cell_states = _gates(concat_conv, self.hidden_channels,
                                                      self.cell_states)
        return self.hidden_states


class ConvTTLSTMCell(nn.Module):
    def __init__(self, input_channels, hidden_channels, order=3, steps=3, ranks=8,
                 kernel_size=5, bias=True):
        super().__init__()
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.steps = steps
        self.order = order
        self.lags = steps - order + 1
        kernel_size = utils._pair(kernel_size)
        padding = kernel_size[0] // 2, kernel_size[1] // 2

        def conv2d(cin, cout):
            return nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=padding, bias=bias)

        self.layers = nn.ModuleList()
        self.layers_ = nn.ModuleList()
        for l in range(order):
            self.layers.append(conv2d(ranks if l < order - 1 else ranks + input_channels,
                                      ranks if l < order - 1 else 4 * hidden_channels))
            self.layers_.append(conv2d(self.lags * hidden_channels, ranks))

    def initialize(self, inputs):
        batch_size, _, height, width = inputs.size()
        self.hidden_states = [torch.zeros(batch_size, self.hidden_channels, height, width,
                                          device=inputs.device) for _ in range(self.steps)]
        self.hidden_pointer = 0
        self.cell_states = torch.zeros(batch_size, self.hidden_channels, height, width,
                                       device=inputs.device)

    def window(self, input_pointer):
        input_states = self.hidden_states[input_pointer:] + self.hidden_states[:input_pointer]
        return torch.cat(input_states[:self.lags], dim=1)

    def forward(self, inputs, first_step=False, checkpointing=False):
        if first_step:
            self.initialize(inputs)
        input_pointer = temp_states = None
        for l in range(self.order):
            input_pointer = self.hidden_pointer if l == 0 else (input_pointer + 1) % self.steps
            input_states = self.layers_[l](self.window(input_pointer))
            temp_states = input_states if l == 0 else input_states + self.layers[l - 1](temp_states)
        concat_conv = self.layers[-1](torch.cat([inputs, temp_states], dim=1))
        outputs, self.cell_states = _gates(concat_conv, self.hidden_channels, self.cell_states)
        self.hidden_states[self.hidden_pointer] = outputs
        self.hidden_pointer = (self.hidden_pointer + 1) % self.steps
        return outputs


class ConvLSTMNet(nn.Module):
    """A stack of stateful cells driven over a sequence (ConvLSTMNet's loop, one block)."""

    def __init__(self, cell, input_channels, hidden_channels, num_layers):
        super().__init__()
        self.layers = nn.ModuleDict({
            f"b0l{i}": cell(input_channels if i == 0 else hidden_channels, hidden_channels)
            for i in range(num_layers)})
        self.output = nn.Conv2d(hidden_channels, input_channels, 1)

    def forward(self, inputs, checkpointing=False):
        outputs = []
        for t in range(inputs.size(1)):
            x = inputs[:, t]
            for layer in self.layers.values():
                x = layer(x, first_step=(t == 0), checkpointing=checkpointing)
            outputs.append(self.output(x))
        return torch.stack(outputs, dim=1)
