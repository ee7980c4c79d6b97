"""NVlabs/conv-tt-lstm's versioned ConvTTLSTMCell (version "v1".."v4", concat_temporal):
v4 with concat_temporal keeps layers_ as Conv3d over the window stacked on a last axis."""
import torch
from torch import nn
from torch.nn.modules import utils


class ConvTTLSTMCell(nn.Module):
    def __init__(self, input_channels, hidden_channels, version="v4", concat_temporal=True,
                 order=3, steps=3, ranks=8, kernel_size=5, bias=True):
        super().__init__()
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.version = version
        self.steps = steps
        self.order = order
        self.concat_temporal = concat_temporal if version in ["v3", "v4"] else False
        self.lags = 1 if version in ["v1", "v2"] else (steps if version == "v3" else steps - order + 1)
        kernel_size = utils._pair(kernel_size)
        padding = kernel_size[0] // 2, kernel_size[1] // 2

        def conv2d(cin, cout):
            return nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=padding, bias=bias)

        def conv3d(cin, cout):
            return nn.Conv3d(cin, cout, bias=bias, kernel_size=kernel_size + (self.lags,),
                             padding=padding + (0,))

        self.layers = nn.ModuleList(
            conv2d(ranks if l < order - 1 else ranks + input_channels,
                   ranks if l < order - 1 else 4 * hidden_channels) for l in range(order))
        if version != "v1":
            self.layers_ = nn.ModuleList()
            for _ in range(order):
                if version == "v2":
                    self.layers_.append(conv2d(hidden_channels, ranks))
                elif self.concat_temporal:
                    self.layers_.append(conv3d(hidden_channels, ranks))
                else:
                    self.layers_.append(conv2d(hidden_channels * self.lags, ranks))

    def init_states(self, inputs):
        batch_size, _, height, width = inputs.size()
        self.hidden_states = [torch.zeros(batch_size, self.hidden_channels, height, width,
                                          device=inputs.device) for _ in range(self.steps)]
        self.hidden_pointer = 0
        self.cell_states = torch.zeros(batch_size, self.hidden_channels, height, width,
                                       device=inputs.device)

    def forward(self, inputs, first_step=False, checkpointing=False):
        if first_step:
            self.init_states(inputs)
        input_pointer = temp_states = None
        for l in range(self.order):
            input_pointer = self.hidden_pointer if l == 0 else (input_pointer + 1) % self.steps
            if self.version in ["v1", "v2"]:
                input_states = self.hidden_states[input_pointer]
                if self.version == "v2":
                    input_states = self.layers_[l](input_states)
            else:
                input_states = self.hidden_states[input_pointer:] + self.hidden_states[:input_pointer]
                if self.version == "v4":
                    input_states = input_states[:self.lags]
                input_states = (torch.stack(input_states, dim=-1) if self.concat_temporal
                                else torch.cat(input_states, dim=1))
                input_states = self.layers_[l](input_states)
                if self.concat_temporal:
                    input_states = torch.squeeze(input_states, dim=-1)
            temp_states = input_states if l == 0 else input_states + self.layers[l - 1](temp_states)
        concat_conv = self.layers[-1](torch.cat([inputs, temp_states], dim=1))
        cc_i, cc_f, cc_o, cc_g = torch.split(concat_conv, self.hidden_channels, dim=1)
        i, f, o, g = torch.sigmoid(cc_i), torch.sigmoid(cc_f), torch.sigmoid(cc_o), torch.tanh(cc_g)
        self.cell_states = f * self.cell_states + i * g
        outputs = o * torch.tanh(self.cell_states)
        self.hidden_states[self.hidden_pointer] = outputs
        self.hidden_pointer = (self.hidden_pointer + 1) % self.order
        return outputs
