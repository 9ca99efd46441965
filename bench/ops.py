"""Time each op's forward + backward against TensorFlow and PyTorch.

At the shapes of the lessons (batch 100): the MNIST MLP and CNN layers,
their max-pools (and an average pool), the two LSTMs (MNIST rows, PTB words)
and the GRU at their shapes, lesson 6's causal attention and layer norm, and
lesson 7's batch norms (the zoo's resnet, one row per stage). Every
framework runs in this process, on the same inputs, with the same thread
count. Frameworks that each own a thread pool disturb each other when
interleaved call by call, so they are timed in alternating blocks
(``--block`` calls of one, then of the next, ``--rounds`` times, with
``--settle`` seconds between blocks for the last one's threads to go to
sleep); each cell is the median of all its calls after a warm-up. The last columns compare the
primary scratchnet backend (numba on the CPU, cupy with ``--backend cupy``)
with the faster peer, and its achieved rate with this machine's limits,
measured in the same run: a compute-bound op's GFLOP/s as a percent of the
float32 FMA peak (``bench/peak.py``) and of the sgemm rate, a memory-bound
one's GB/s against an array copy. The FLOPs and bytes are the ops' own cost
formulas and the roofs are measured as ``sn.profile()`` measures them.

    python bench/ops.py                      # every available backend, TF and torch
    python bench/ops.py --backend numba --rounds 10
    python bench/ops.py --backend cupy --large   # on a GPU: torch on CUDA as the peer
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SETTLE_S, alternating_medians, cpu_count, fmt_ms, import_or_reason, machine_line, markdown_table  # noqa: E402,E501

import scratchnet as sn  # noqa: E402
from scratchnet.profiler import calibration, report  # noqa: E402


def shaped(*shape):
    """A float32 array of ``shape`` holding no memory: all a cost formula reads (shape, dtype, size)."""
    return np.broadcast_to(np.float32(0), shape)


def cases(batch, large):
    """``(op, shape label, spec, cost)`` at the lessons' shapes; ``cost`` is the op's own formula (``sn.ops.<op>.cost``)."""
    N, f = batch, shaped
    hidden = (1024, 1024) if large else (128, 256)
    out = [
        ("dense", f"{N}x{C} -> {K}", dict(N=N, C=C, K=K), sn.ops.dense.cost(x=f(N, C), w=f(C, K), b=f(K)))
        for C, K in ((784, 500), (3136, 512))
    ]
    for H, C, O in ((28, 1, 32), (14, 32, 64)):
        out.append(("conv2d 5x5 SAME", f"{N}x{H}x{H}x{C} -> {O}", dict(N=N, H=H, C=C, O=O, k=5),
                    sn.ops.conv2d.cost(x=f(N, H, H, C), w=f(5, 5, C, O), b=f(O), strides=1, padding="SAME")))
    for H, C in ((28, 32), (14, 64)):
        out.append(("max_pool2d 2x2", f"{N}x{H}x{H}x{C}", dict(N=N, H=H, C=C),
                    sn.ops.max_pool2d.cost(x=f(N, H, H, C), ksize=2, strides=2, padding="SAME")))
    # Average pooling at LeNet's first pooling shape, beside max pooling's.
    out.append(("avg_pool2d 2x2", f"{N}x28x28x32", dict(N=N, H=28, C=32),
                sn.ops.avg_pool2d.cost(x=f(N, 28, 28, 32), ksize=2, strides=2, padding="SAME")))
    for D, Hd in ((28, hidden[0]), (256, hidden[1])):
        T = 28
        out.append(("lstm", f"{N}x{T}x{D}, hidden {Hd}", dict(N=N, T=T, D=D, H=Hd),
                    sn.ops.lstm.cost(x=f(N, T, D), kernel=f(D, 4 * Hd), recurrent_kernel=f(Hd, 4 * Hd), bias=f(4 * Hd))))
    # Issue 27's sequence ops: the GRU at the row LSTM's and the character model's shapes, and lesson 6's
    # causal attention (4 heads of 16 over 50 characters) and layer norm (64 channels).
    for T, D, Hd in ((28, 28, 128), (50, 100, 128)):
        out.append(("gru", f"{N}x{T}x{D}, hidden {Hd}", dict(N=N, T=T, D=D, H=Hd),
                    sn.ops.gru.cost(x=f(N, T, D), kernel=f(D, 3 * Hd), recurrent_kernel=f(Hd, 3 * Hd),
                                    bias=f(2, 3 * Hd))))
    heads, T, d = 4, 50, 16
    out.append(("attention causal", f"{N}x{heads}x{T}x{d}", dict(N=N, h=heads, T=T, d=d),
                sn.ops.attention.cost(q=f(N, heads, T, d), k=f(N, heads, T, d), v=f(N, heads, T, d))))
    out.append(("layer_norm", f"{N * 50}x64", dict(N=N * 50, C=64),
                sn.ops.layer_norm.cost(x=f(N * 50, 64), gamma=f(64), beta=f(64))))
    # Issue 26: batch norm at lesson 7's three stages (the zoo's resnet: 16, 32 and 64 channels on 28x28, 14x14
    # and 7x7 images, NHWC).
    for H, C in ((28, 16), (14, 32), (7, 64)):
        out.append(("batch_norm", f"{N}x{H}x{H}x{C}", dict(N=N, H=H, C=C),
                    sn.ops.batch_norm.cost(x=f(N, H, H, C), gamma=f(C), beta=f(C))))
    return out


def make_inputs(op, s, rng):
    """Host float32 inputs and an output gradient for one case."""
    f = lambda *shape: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)  # noqa: E731
    N = s["N"]
    if op == "dense":
        return dict(x=f(N, s["C"]), w=f(s["C"], s["K"]), b=f(s["K"]), dy=f(N, s["K"]))
    if op.startswith("conv2d"):
        return dict(x=f(N, s["H"], s["H"], s["C"]), w=f(s["k"], s["k"], s["C"], s["O"]), b=f(s["O"]),
                    dy=f(N, s["H"], s["H"], s["O"]))
    if op.startswith(("max_pool2d", "avg_pool2d")):
        return dict(x=f(N, s["H"], s["H"], s["C"]), dy=f(N, s["H"] // 2, s["H"] // 2, s["C"]))
    if op == "lstm":
        return dict(x=f(N, s["T"], s["D"]), k=f(s["D"], 4 * s["H"]), rk=f(s["H"], 4 * s["H"]), b=f(4 * s["H"]),
                    dy=f(N, s["T"], s["H"]))
    if op == "gru":
        return dict(x=f(N, s["T"], s["D"]), k=f(s["D"], 3 * s["H"]), rk=f(s["H"], 3 * s["H"]), b=f(2, 3 * s["H"]),
                    dy=f(N, s["T"], s["H"]))
    if op.startswith("attention"):
        shape = (N, s["h"], s["T"], s["d"])
        return dict(q=f(*shape), k=f(*shape), v=f(*shape), dy=f(*shape))
    if op == "layer_norm":
        return dict(x=f(N, s["C"]), g=1 + f(s["C"]), b=f(s["C"]), dy=f(N, s["C"]))
    if op == "batch_norm":
        shape = (N, s["H"], s["H"], s["C"])
        return dict(x=f(*shape), g=1 + f(s["C"]), b=f(s["C"]), dy=f(*shape))
    raise ValueError(op)


# --- the frameworks: each returns a callable doing one forward + backward ---


def scratchnet_step(op, a, be):
    a = {k: be.xp.asarray(v) for k, v in a.items()}
    if op == "dense":
        def step():
            y, bp = sn.ops.dense(a["x"], a["w"], a["b"])
            return bp(a["dy"])
    elif op.startswith("conv2d"):
        def step():
            y, bp = sn.ops.conv2d(a["x"], a["w"], a["b"], strides=1, padding="SAME")
            return bp(a["dy"])
    elif op.startswith("max_pool2d"):
        def step():
            y, bp = sn.ops.max_pool2d(a["x"], 2, 2, padding="SAME")
            return bp(a["dy"])
    elif op.startswith("avg_pool2d"):
        def step():
            y, bp = sn.ops.avg_pool2d(a["x"], 2, 2, padding="SAME")
            return bp(a["dy"])
    elif op == "gru":
        def step():
            (ys, h), bp = sn.ops.gru(a["x"], a["k"], a["rk"], a["b"])
            return bp(a["dy"])
    elif op.startswith("attention"):
        def step():
            y, bp = sn.ops.attention(a["q"], a["k"], a["v"], causal=True)
            return bp(a["dy"])
    elif op == "layer_norm":
        def step():
            y, bp = sn.ops.layer_norm(a["x"], a["g"], a["b"], 1e-5)
            return bp(a["dy"])
    elif op == "batch_norm":
        def step():
            (y, mean, var), bp = sn.ops.batch_norm(a["x"], a["g"], a["b"], 1e-5)
            return bp(a["dy"])
    else:
        def step():
            (ys, h, c), bp = sn.ops.lstm(a["x"], a["k"], a["rk"], a["b"])
            return bp(a["dy"])
    return step


def tf_step(op, a, tf):
    t = {k: tf.constant(v) for k, v in a.items()}
    layer = None
    if op in ("lstm", "gru"):
        import keras

        layer = getattr(keras.layers, op.upper())(a["rk"].shape[0], return_sequences=True)
        layer.build(a["x"].shape)
        layer.set_weights([a["k"], a["rk"], a["b"]])
    if op.startswith("attention"):
        T = a["q"].shape[2]
        causal = tf.constant(np.tril(np.ones((T, T), bool)))
        scale = np.float32(1 / np.sqrt(a["q"].shape[-1]))
        q, k, v = t["q"], t["k"], t["v"]

        @tf.function
        def attention_step(dy):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                s_ = tf.where(causal, tf.matmul(q, k, transpose_b=True) * scale, -np.inf)
                loss = tf.reduce_sum(tf.matmul(tf.nn.softmax(s_), v) * dy)
            return tape.gradient(loss, [q, k, v])

        return lambda: attention_step(t["dy"])
    if op in ("layer_norm", "batch_norm"):
        g, b = t["g"], t["b"]
        axes = [-1] if op == "layer_norm" else list(range(len(a["x"].shape) - 1))

        @tf.function
        def norm_step(x, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, g, b])
                mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
                loss = tf.reduce_sum(tf.nn.batch_normalization(x, mean, var, b, g, 1e-5) * dy)
            return tape.gradient(loss, [x, g, b])

        return lambda: norm_step(t["x"], t["dy"])

    def forward(x, w, b):
        if op == "dense":
            return tf.matmul(x, w) + b
        if op.startswith("conv2d"):
            return tf.nn.conv2d(x, w, 1, "SAME") + b
        if op.startswith("max_pool2d"):
            return tf.nn.max_pool2d(x, 2, 2, "SAME")
        if op.startswith("avg_pool2d"):
            return tf.nn.avg_pool2d(x, 2, 2, "SAME")
        return layer(x)

    w, b = t.get("w"), t.get("b")

    @tf.function
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            params = [v for v in (w, b) if v is not None]
            tape.watch(params)
            y = forward(x, w, b)
            loss = tf.reduce_sum(y * dy)
        sources = [x] + (layer.trainable_variables if layer is not None else params)
        return tape.gradient(loss, sources)

    return lambda: step(t["x"], t["dy"])


def torch_step(op, a, torch, device):
    F = torch.nn.functional

    def T(v, grad=True):
        return torch.tensor(v, device=device, requires_grad=grad)

    if op == "dense":
        x, w, b, dy = T(a["x"]), T(a["w"].T.copy()), T(a["b"]), T(a["dy"], False)
        fwd = lambda: F.linear(x, w, b)  # noqa: E731
    elif op.startswith("conv2d"):
        # PyTorch's native layout is NCHW; time it there rather than add transposes.
        x = T(a["x"].transpose(0, 3, 1, 2).copy())
        w = T(a["w"].transpose(3, 2, 0, 1).copy())
        b, dy = T(a["b"]), T(a["dy"].transpose(0, 3, 1, 2).copy(), False)
        fwd = lambda: F.conv2d(x, w, b, padding="same")  # noqa: E731
    elif op.startswith("max_pool2d"):
        x, dy = T(a["x"].transpose(0, 3, 1, 2).copy()), T(a["dy"].transpose(0, 3, 1, 2).copy(), False)
        fwd = lambda: F.max_pool2d(x, 2, 2)  # noqa: E731
    elif op.startswith("avg_pool2d"):
        x, dy = T(a["x"].transpose(0, 3, 1, 2).copy()), T(a["dy"].transpose(0, 3, 1, 2).copy(), False)
        fwd = lambda: F.avg_pool2d(x, 2, 2)  # noqa: E731
    elif op.startswith("attention"):
        q, k, v, dy = T(a["q"]), T(a["k"]), T(a["v"]), T(a["dy"], False)
        fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    elif op == "layer_norm":
        x, g, b, dy = T(a["x"]), T(a["g"]), T(a["b"]), T(a["dy"], False)
        fwd = lambda: F.layer_norm(x, (x.shape[-1],), g, b, 1e-5)  # noqa: E731
    elif op == "batch_norm":
        # PyTorch's native layout is NCHW (as for the convolutions); training mode, batch statistics.
        x, dy = T(a["x"].transpose(0, 3, 1, 2).copy()), T(a["dy"].transpose(0, 3, 1, 2).copy(), False)
        g, b = T(a["g"]), T(a["b"])
        fwd = lambda: F.batch_norm(x, None, None, g, b, training=True, eps=1e-5)  # noqa: E731
    else:
        H = a["rk"].shape[0]
        rnn = getattr(torch.nn, op.upper())(a["x"].shape[2], H, batch_first=True).to(device)
        x, dy = T(a["x"]), T(a["dy"], False)
        fwd = lambda: rnn(x)[0]  # noqa: E731

    def step():
        y = fwd()
        y.backward(dy)

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="all", help="scratchnet backends, comma-separated (default: all available)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    p.add_argument("--block", type=int, default=4, help="calls of one framework per round (default 4)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help=f"seconds between blocks, untimed (default {SETTLE_S}: OpenBLAS's idle threads spin for about 0.1 s)")
    p.add_argument("--large", action="store_true", help="batch 1024 and LSTM hidden 1024 (the GPU case)")
    p.add_argument("--peers", default="tf,torch", help="peer frameworks, comma-separated: tf, torch, or none")
    p.add_argument("--only", default="", help="run only ops whose name contains one of these (comma-separated)")
    args = p.parse_args(argv)

    backends = sn.available_backends() if args.backend == "all" else args.backend.split(",")
    gpu = "cupy" in backends
    primary = "cupy" if gpu else ("numba" if "numba" in backends else backends[0])
    threads = cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))

    peers, notes = {}, []
    wanted = [] if args.peers in ("", "none") else args.peers.split(",")
    if "tf" in wanted:
        tf, why = import_or_reason("tensorflow")
        if tf is not None and gpu and not tf.config.list_physical_devices("GPU"):
            tf, why = None, "TensorFlow sees no GPU"
        if tf is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            peers["tf"] = ("tf", tf)
        else:
            notes.append(f"TensorFlow: n/a ({why})")
    if "torch" in wanted:
        torch, why = import_or_reason("torch")
        if torch is not None and gpu and not torch.cuda.is_available():
            torch, why = None, "torch has no CUDA"
        if torch is not None:
            torch.set_num_threads(threads)
            peers["torch"] = ("torch-cuda" if gpu else "torch", torch)
        else:
            notes.append(f"PyTorch: n/a ({why})")

    sync = None
    if gpu:
        import cupy

        def sync():
            cupy.cuda.get_current_stream().synchronize()
            if "torch" in peers:
                peers["torch"][1].cuda.synchronize()

    with sn.use_backend(primary) as be:
        peaks = calibration.measure(be)  # the roofs, measured as sn.profile() measures them
    fma = None
    if not gpu:
        import peak

        fma = peak.fma_peak_gflops(threads)

    batch = 1024 if args.large else 100
    rng = np.random.default_rng(0)
    rows = []
    for op, label, spec, cost in cases(batch, args.large):
        if args.only and not any(word in op for word in args.only.split(",")):
            continue
        a = make_inputs(op, spec, rng)
        steps, times = {}, {}
        for name in backends:
            try:
                with sn.use_backend(name) as be:
                    step = scratchnet_step(op, a, be)
                    step()
            except NotImplementedError:
                times[name] = "not implemented"
                continue

            def in_backend(step=step, name=name):
                with sn.use_backend(name):
                    return step()

            steps[name] = in_backend
        for key, (label_, mod) in peers.items():
            if key == "tf":
                steps[label_] = tf_step(op, a, mod)
            else:
                steps[label_] = torch_step(op, a, mod, "cuda" if gpu else "cpu")
        times.update(alternating_medians(steps, args.rounds, args.block, args.warmup, sync, args.settle))
        mine = times.get(primary)
        peer_times = [times[label_] for label_, _ in peers.values() if isinstance(times[label_], float)]
        ratio = f"{mine / min(peer_times):.2f}" if isinstance(mine, float) and peer_times else "n/a"
        torch_label = peers["torch"][0] if "torch" in peers else None
        vs_torch = (f"{mine / times[torch_label]:.2f}" if torch_label and isinstance(mine, float)
                    and isinstance(times[torch_label], float) else "n/a")
        rate = "n/a"
        if isinstance(mine, float):
            gflops, gbs, bound, pct = report.roofline(cost.flops + cost.backward_flops,
                                                      cost.bytes + cost.backward_bytes, mine * 1e-3, peaks)
            if bound == "compute":
                of_fma = f"{100 * gflops / fma:.0f}% of FMA peak, " if fma else ""
                rate = f"{gflops:.1f} GFLOP/s ({of_fma}{pct:.0f}% of sgemm)"
            elif bound == "memory":
                rate = f"{gbs:.1f} GB/s ({pct:.0f}% of copy)"
        rows.append([op, label, *(fmt_ms(times[c]) for c in [*backends, *(l for l, _ in peers.values())]), vs_torch,
                     ratio, rate])
        print(f"  {op} {label}: done", file=sys.stderr, flush=True)

    columns = [*(f"{b} ms" for b in backends), *(f"{l} ms" for l, _ in peers.values())]
    headers = ["op", "shape", *columns, f"{primary} / torch", f"{primary} / best peer", f"{primary} rate (% of its roof)"]
    where = "GPU" if gpu else f"CPU, {threads} threads"
    print(machine_line())
    print(f"Forward + backward, median of {args.rounds} alternating rounds of {args.block} calls per framework "
          f"({args.settle} s between blocks) after {args.warmup} warm-up calls; batch {batch}; {where}.")
    fma_text = f"float32 FMA peak {fma:.1f} GFLOP/s, " if fma else ""
    print(f"Roofs on {primary}: {fma_text}float32 sgemm {peaks['sgemm_gflops']:.1f} GFLOP/s, "
          f"copy {peaks['copy_gbs']:.1f} GB/s.\n")
    print(markdown_table(headers, rows))
    if not gpu:
        print("\nFLOPs are each op's cost formula: for conv2d those of the direct convolution. The numba backend runs "
              "stride-1 5x5 convolutions with C, O >= 8 through Winograd F(4x4, 5x5), 6.25x fewer multiplications, so "
              "its effective rate there can pass the FMA peak.")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
