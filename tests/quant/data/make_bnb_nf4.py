# Makes bnb_nf4.safetensors: NF4 quantization (blocksize 64) with and without double
# quantization of a deterministic input, computed with torch exactly as bitsandbytes'
# torch-op ("default") backend does it: create_dynamic_map(signed=True) built with
# torch.linspace in float32, absmax per block, clamp(x * (1/absmax), -1, 1) bucketized over
# the f32 midpoints of the code, high nibble first, offset = f32 mean of absmax (torch's
# reduction), absmax - offset quantized in blocks of 256 with the dynamic map, and the
# dequantization code[q] * absmax2 + offset, nf4[q] * absmax'.
# Usage: python make_bnb_nf4.py OUT_DIR   (needs torch and safetensors)
import sys
import torch
from safetensors.torch import save_file

NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                    0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                    0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                    0.7229568362236023, 1.0], dtype=torch.float32)


def dynamic_map():
    data = []
    for i in range(7):
        b = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        m = (b[:-1] + b[1:]) / 2.0
        data += ((10 ** (i - 6)) * m).tolist()
        data += (-(10 ** (i - 6)) * m).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def inputs(rows, cols):
    i = torch.arange(rows * cols, dtype=torch.int64)
    h = (i * 2654435761 + 12345) % (1 << 32)
    u = (h >> 8).to(torch.float32) * (2.0 ** -24)
    x = u - 0.5
    x = (x * x) * x
    k = (torch.arange(rows) % 5 + 4).repeat_interleave(cols)
    x = x * torch.pow(2.0, -k.to(torch.float32))
    x = x.reshape(rows, cols)
    x[0, 320:384] = 0.0            # an all-zero block
    x[1, 0] = 1.0                  # scaled values equal to code midpoints
    x[1, 1:16] = (NF4[:-1] + NF4[1:]) / 2
    return x.contiguous()


def blockwise(x, code, bs):
    a = x.reshape(-1, bs)
    absmax = a.abs().max(dim=-1)[0]
    s = torch.clamp(a * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    q = torch.bucketize(s, (code[:-1] + code[1:]) / 2, out_int32=True).to(torch.uint8)
    return q, absmax


rows, cols = 64, 512
x = inputs(rows, cols)
dm = dynamic_map()
q4, absmax = blockwise(x, NF4, 64)
packed = (q4[::2] << 4) | q4[1::2]
deq_single = (NF4[q4.long()].reshape(-1, 64) * absmax.view(-1, 1)).reshape(rows, cols)
offset = absmax.mean()
qa, absmax2 = blockwise(absmax - offset, dm, 256)
a2 = (dm[qa.long()].reshape(-1, 256) * absmax2.view(-1, 1)).reshape(-1)
a2 += offset
deq_double = (NF4[q4.long()].reshape(-1, 64) * a2.view(-1, 1)).reshape(rows, cols)
save_file({"input": x, "dynamic_map": dm, "codes": packed.contiguous(), "absmax": absmax,
           "deq_single": deq_single.contiguous(), "offset": offset.reshape(1),
           "absmax_codes": qa.contiguous(), "absmax2": absmax2, "deq_double": deq_double.contiguous()},
          sys.argv[1] + "/bnb_nf4.safetensors", metadata={"torch": torch.__version__})
print("ok", torch.__version__)
