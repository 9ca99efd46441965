"""Train each zoo model in scratchnet, Keras and PyTorch, side by side.

For every model named in ``--models``, the three frameworks train the same
architecture with the same hyperparameters (the zoo's, taken from the lessons'
tutorials), on the same batches of the same data split, in this one process
on this one machine. The frameworks each own a thread pool, so they train in
alternating blocks of ``--block`` steps (scratchnet's, then Keras's, then
PyTorch's, and again), never interleaved call by call, with ``--settle``
untimed seconds between blocks for the last framework's threads to go to sleep. The report is a
Markdown table: median milliseconds per training step (the first steps,
which compile or trace, are left out), its ratio to the faster peer (the
faster of Keras and PyTorch), and each framework's final test accuracy
(on the moving-average weights where the zoo model keeps them; next-token
accuracy on held-out text for ``charlm``).

Usage::

    python bench/train.py --steps 200 --models mlp,lenet
    python bench/train.py --train-data ~/mnist --test-data ../shared/datasets/mnist-test
    python bench/train.py --fashion          # /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)
    python bench/train.py --models charlm --text corpus.txt

The peers are written here, not in the library: TensorFlow and PyTorch are
imported only by this script.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import SETTLE_S, cpu_count, import_peers_first, machine_line, markdown_table

FRAMEWORKS = ("scratchnet", "keras", "torch")
WARMUP_STEPS = 3  # compile (Numba), trace (tf.function) and allocate: not timed


# -------------------------------------------------------------------- batches


def fixed_batches(recipe, steps):
    """The training batches, drawn once so that every framework sees the same ones.

    Returns a list of ``(new_epoch, x, y)``; ``new_epoch`` tells a model that
    carries state between batches (``charlm``) to reset it.
    """
    out, last = [], None
    for _, (epoch, x, y) in zip(range(steps), recipe.batches()):
        out.append((epoch != last, x, y))
        last = epoch
    return out


def ema_decay_now(decay, n):
    """``tf.train.ExponentialMovingAverage``'s decay with ``num_updates = n``."""
    return min(decay, (1.0 + n) / (10.0 + n))


# ------------------------------------------------------------------ scratchnet


def run_scratchnet(recipe, batches, test, between_blocks=None, block=None, settle=0.0):
    """``(times, evaluate)``: train on every batch through scratchnet's training loop, timing each step.

    The loop is the one ``fit`` and ``scratchnet train`` run, with the
    recipe's own callbacks (``charlm`` resets its carried state each epoch);
    a callback reads the clock around each ``train_on_batch``. When
    ``between_blocks`` is given, it is called after every ``block`` steps,
    outside the timed steps, from the batch stream the loop draws from: that
    is where the peers run their own blocks of steps, each block after
    ``settle`` untimed seconds (for the threads of the framework before to go
    back to sleep).
    """
    import time

    from scratchnet import callbacks, training

    class StepTimer(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            recipe.synchronize()
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            recipe.synchronize()
            self.times.append(time.perf_counter() - self._t)

    def stream():
        for i, (epoch, (_, x, y)) in enumerate(zip(epochs_of(batches), batches)):
            if between_blocks is not None and i and i % block == 0:
                between_blocks()
                time.sleep(settle)  # the peers' threads go back to sleep before scratchnet's block
            yield epoch, x, y

    timer = StepTimer()
    training.train(recipe.model, stream(), len(batches), [*recipe.callbacks(), timer], batch_logs="last")
    return timer.times, lambda: recipe.evaluate(*test)["accuracy"]


def epochs_of(batches):
    """The epoch number of each ``(new_epoch, x, y)`` batch."""
    epoch = -1
    for new_epoch, _, _ in batches:
        epoch += bool(new_epoch)
        yield epoch


# ---------------------------------------------------------------------- Keras


def keras_model(name, hp, vocab_size=None):
    """The zoo model ``name`` in Keras 3 layers, with the zoo's initializers and regularizers."""
    import keras
    from keras import layers as L

    tn = keras.initializers.TruncatedNormal(stddev=hp.get("init_stddev", 0.1))
    const = keras.initializers.Constant
    # The zoo's l2 is the originals' tf.contrib.layers.l2_regularizer(scale) = scale * sum(w**2) / 2.
    l2 = keras.regularizers.l2(hp["l2"] / 2) if hp.get("l2") else None
    if name == "mlp":
        return keras.Sequential([
            keras.Input((784,)),
            L.Dense(hp["hidden"], activation="relu", kernel_initializer=tn, bias_initializer=const(0.1), kernel_regularizer=l2),
            L.Dense(10, kernel_initializer=tn, bias_initializer=const(0.1), kernel_regularizer=l2),
        ])
    if name == "lenet":
        return keras.Sequential([
            keras.Input((784,)),
            L.Reshape((28, 28, 1)),
            L.Conv2D(hp["conv1"], 5, padding="same", activation="relu", kernel_initializer=tn),
            L.MaxPooling2D(2, 2, padding="same"),
            L.Conv2D(hp["conv2"], 5, padding="same", activation="relu", kernel_initializer=tn),
            L.MaxPooling2D(2, 2, padding="same"),
            L.Flatten(),
            L.Dense(hp["fc"], activation="relu", kernel_initializer=tn, bias_initializer=const(0.1)),
            L.Dropout(hp["dropout"]),
            L.Dense(10, kernel_initializer=tn, bias_initializer=const(0.1), kernel_regularizer=l2),
        ])
    if name == "lstm":
        stack = [keras.Input((784,)), L.Reshape((28, 28))]
        for i in range(hp["layers"]):
            stack += [L.LSTM(hp["units"], return_sequences=i < hp["layers"] - 1), L.Dropout(hp["dropout"])]
        stack.append(L.Dense(10, kernel_initializer=tn, bias_initializer=const(0.1)))
        return keras.Sequential(stack)
    if name == "charlm":
        ids = keras.Input((None,), dtype="int32")
        h0 = keras.Input((hp["units"],))
        c0 = keras.Input((hp["units"],))
        e = L.Embedding(vocab_size, hp["embedding_size"])(ids)
        seq, h, c = L.LSTM(hp["units"], return_sequences=True, return_state=True)(e, initial_state=[h0, c0])
        return keras.Model([ids, h0, c0], [L.Dense(vocab_size)(seq), h, c])
    raise ValueError(f"bench: no Keras peer for {name!r}")


def keras_optimizer(hp, steps_per_epoch):
    import keras

    if hp["optimizer"] == "sgd":
        lr = keras.optimizers.schedules.ExponentialDecay(hp["learning_rate"], steps_per_epoch, hp["decay_rate"])
        return keras.optimizers.SGD(lr)
    return keras.optimizers.Adam(hp["learning_rate"], global_clipnorm=hp.get("clipnorm"))


def run_keras(name, hp, batches, test, steps_per_epoch, vocab_size=None):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(hp.get("seed", 0))
    model = keras_model(name, hp, vocab_size)
    opt = keras_optimizer(hp, steps_per_epoch)
    params = model.trainable_variables
    shadows = [tf.Variable(v) for v in params] if hp.get("ema_decay") else []
    carried = name == "charlm"

    def loss_of(logits, y):
        ce = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return ce + tf.add_n(model.losses) if model.losses else ce

    @tf.function
    def step(x, y, h, c):
        with tf.GradientTape() as tape:
            if carried:
                logits, h, c = model([x, h, c], training=True)
            else:
                logits = model(x, training=True)
            loss = loss_of(logits, y)
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
        if shadows:
            n = tf.cast(opt.iterations - 1, tf.float32)  # updates before this one, as the zoo counts
            d = tf.minimum(hp["ema_decay"], (1.0 + n) / (10.0 + n))
            for s, v in zip(shadows, params):
                s.assign(d * s + (1.0 - d) * v)
        return loss, h, c

    it = iter(batches)
    state = {}

    def train_one():
        new_epoch, x, y = next(it)
        if carried and new_epoch:
            state["h"] = state["c"] = tf.zeros((x.shape[0], hp["units"]))
        loss, h, c = step(x, y, state.get("h", 0.0), state.get("c", 0.0))
        float(loss)  # waits for the step
        if carried:
            state["h"], state["c"] = h, c

    def evaluate():
        if shadows:  # evaluate on the averages, as the zoo does
            for s, v in zip(shadows, params):
                v.assign(s)
        x, y = test
        if carried:
            z = np.zeros((x.shape[0], hp["units"]), np.float32)
            logits = model.predict([x, z, z], batch_size=1000, verbose=0)[0]
        else:
            logits = model.predict(x, batch_size=1000, verbose=0)
        return float(np.mean(np.argmax(logits, -1) == y))

    return train_one, evaluate


# -------------------------------------------------------------------- PyTorch


def torch_model(name, hp, vocab_size=None):
    from torch import nn

    def tn_(layer, bias):
        nn.init.trunc_normal_(layer.weight, std=hp.get("init_stddev", 0.1), a=-2 * hp.get("init_stddev", 0.1), b=2 * hp.get("init_stddev", 0.1))
        nn.init.constant_(layer.bias, bias)
        return layer

    class Reshape(nn.Module):
        def __init__(self, *shape):
            super().__init__()
            self.shape = shape

        def forward(self, x):
            return x.reshape(x.shape[0], *self.shape)

    class Permute(nn.Module):
        def __init__(self, *dims):
            super().__init__()
            self.dims = dims

        def forward(self, x):
            return x.permute(*self.dims)

    if name == "mlp":
        return nn.Sequential(tn_(nn.Linear(784, hp["hidden"]), 0.1), nn.ReLU(), tn_(nn.Linear(hp["hidden"], 10), 0.1))
    if name == "lenet":
        return nn.Sequential(
            Reshape(1, 28, 28),
            tn_(nn.Conv2d(1, hp["conv1"], 5, padding="same"), 0.0), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True),
            tn_(nn.Conv2d(hp["conv1"], hp["conv2"], 5, padding="same"), 0.0), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True),
            # NCHW -> NHWC before flattening so the dense layer sees the Keras order
            Permute(0, 2, 3, 1), nn.Flatten(),
            tn_(nn.Linear(7 * 7 * hp["conv2"], hp["fc"]), 0.1), nn.ReLU(), nn.Dropout(hp["dropout"]),
            tn_(nn.Linear(hp["fc"], 10), 0.1),
        )
    if name == "lstm":
        class StackedLSTM(nn.Module):
            def __init__(self):
                super().__init__()
                # torch's dropout= acts between layers only; the original also drops the last layer's output
                self.rnn = nn.LSTM(28, hp["units"], num_layers=hp["layers"], dropout=hp["dropout"], batch_first=True)
                self.drop = nn.Dropout(hp["dropout"])
                self.out = tn_(nn.Linear(hp["units"], 10), 0.1)

            def forward(self, x):
                seq, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
                return self.out(self.drop(seq[:, -1]))

        return StackedLSTM()
    if name == "charlm":
        class CharLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(vocab_size, hp["embedding_size"])
                self.rnn = nn.LSTM(hp["embedding_size"], hp["units"], batch_first=True)
                self.out = nn.Linear(hp["units"], vocab_size)

            def forward(self, ids, state=None):
                seq, state = self.rnn(self.embed(ids), state)
                return self.out(seq), state

        return CharLM()
    raise ValueError(f"bench: no PyTorch peer for {name!r}")


def run_torch(name, hp, batches, test, steps_per_epoch, vocab_size=None, device="cpu"):
    """``(step, evaluate)`` for the PyTorch peer; ``device="cuda"`` runs it on the GPU (cuDNN)."""
    import torch
    from torch import nn

    torch.manual_seed(hp.get("seed", 0))
    model = torch_model(name, hp, vocab_size).to(device)
    params = list(model.parameters())
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=hp["learning_rate"])
    else:
        opt = torch.optim.Adam(params, lr=hp["learning_rate"])
    # The zoo regularizes the kernels of the layers it names; find them by shape (Linear weights).
    regularized = []
    if hp.get("l2"):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        regularized = [m.weight for m in (linears if name == "mlp" else linears[-1:])]
    shadows = [p.detach().clone() for p in params] if hp.get("ema_decay") else []
    carried = name == "charlm"
    ce = nn.CrossEntropyLoss()

    it = iter(enumerate(batches))
    state = {}

    def train_one():
        i, (new_epoch, x, y) = next(it)
        if carried and new_epoch:
            state.clear()
        model.train()
        x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        if hp["optimizer"] == "sgd":  # tf.train.exponential_decay, not staircase
            for g in opt.param_groups:
                g["lr"] = hp["learning_rate"] * hp["decay_rate"] ** (i / steps_per_epoch)
        opt.zero_grad()
        if carried:
            logits, (h, c) = model(x.long(), (state["h"], state["c"]) if state else None)
            state["h"], state["c"] = h.detach(), c.detach()
            loss = ce(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            loss = ce(model(x), y)
        for w in regularized:
            loss = loss + hp["l2"] / 2 * (w * w).sum()
        loss.backward()
        if hp.get("clipnorm"):
            nn.utils.clip_grad_norm_(params, hp["clipnorm"])
        opt.step()
        if shadows:
            d = ema_decay_now(hp["ema_decay"], i)
            with torch.no_grad():
                for s, p in zip(shadows, params):
                    s.mul_(d).add_(p, alpha=1 - d)
        if device != "cpu":
            torch.cuda.synchronize()  # GPU work is asynchronous: time its completion

    def evaluate():
        model.eval()
        with torch.no_grad():
            for s, p in zip(shadows, params):
                p.copy_(s)
            x, y = test
            preds = []
            for lo in range(0, len(x), 1000):
                xb = torch.from_numpy(np.ascontiguousarray(x[lo:lo + 1000])).to(device)
                logits = model(xb.long())[0] if carried else model(xb)
                preds.append(logits.argmax(-1).cpu().numpy())
        return float(np.mean(np.concatenate(preds) == y))

    return train_one, evaluate


# --------------------------------------------------------------------- report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,lenet,lstm,charlm",
                   help="comma-separated zoo models (default: the four with Keras and PyTorch peers)")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of scratchnet,keras,torch")
    p.add_argument("--steps", type=int, default=100, help="training steps per model and framework (default 100)")
    p.add_argument("--block", type=int, default=10, help="steps of one framework before the next takes its turn (default 10)")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help=f"untimed seconds between blocks (default {SETTLE_S}: idle BLAS and OpenMP threads spin for about 0.1 s)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--backend", default="auto", help="scratchnet backend: auto, numpy, numba, cupy")
    p.add_argument("--train-data", help="folder with MNIST IDX files (default: the data package's search path)")
    p.add_argument("--test-data", help="folder with the t10k IDX files, used when --train-data holds no test set")
    p.add_argument("--validation-size", type=int, help="training examples held out (default 5,000, as read_data_sets)")
    p.add_argument("--fashion", action="store_true", help="full Fashion-MNIST from /usr/share/datasets/fashion-mnist")
    p.add_argument("--text", help="text file for charlm (default: the data package's corpus)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = sorted(set(args.frameworks) - set(FRAMEWORKS))
    if unknown:
        p.error(f"unknown framework(s) {unknown}; choose from {FRAMEWORKS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    # The peers first: PyTorch must bind its own MKL before scratchnet loads one (kernels/runtime/blas.py).
    import_peers_first([m for f, m in (("torch", "torch"), ("keras", "tensorflow")) if f in args.frameworks])
    import scratchnet as sn
    from scratchnet import zoo

    sn.use_backend(args.backend)
    steps = max(args.steps, WARMUP_STEPS + 1)
    print(f"scratchnet backend {sn.get_backend().name}; {cpu_count()} CPUs; {steps} steps of batch {args.batch_size} "
          f"per model and framework, the first {WARMUP_STEPS} untimed", flush=True)
    # On the GPU backend the PyTorch peer runs on CUDA too, when its build has
    # CUDA (tensorflow-cpu stays on the CPU).
    torch_device = "cpu"
    if sn.get_backend().name == "cupy" and "torch" in args.frameworks:
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"PyTorch peer on {torch_device}", flush=True)
    runners = {"scratchnet": None, "keras": run_keras,
               "torch": lambda *a: run_torch(*a, device=torch_device)}
    rows = []
    for name in args.models:
        sn.random.seed(args.seed)
        data = zoo.load_data(name, data=args.text if name == "charlm" else args.train_data, test_data=args.test_data,
                             fashion=args.fashion, validation_size=args.validation_size, batch_size=args.batch_size)
        print(f"{name}: {data.source}", flush=True)
        recipe = zoo.build(name, data=data, batch_size=args.batch_size, seed=args.seed)
        hp = dict(recipe.hparams, seed=args.seed)
        batches = fixed_batches(recipe, steps)
        test = (data.test.images, data.test.labels)
        # Each peer steps through the same batches on its own; all of them alternate in blocks.
        peer_steps, peer_evals, peer_times = {}, {}, {}
        for fw in args.frameworks:
            if fw != "scratchnet":
                print(f"  {name} / {fw}: building", flush=True)
                peer_steps[fw], peer_evals[fw] = runners[fw](name, hp, batches, test, recipe.steps_per_epoch,
                                                             getattr(data, "vocab_size", None))
                peer_times[fw] = []

        def peers_block(count=args.block):
            for fw, step in peer_steps.items():
                time.sleep(args.settle)
                for _ in range(count):
                    if len(peer_times[fw]) < len(batches):
                        start = time.perf_counter()
                        step()
                        peer_times[fw].append(time.perf_counter() - start)

        print(f"  {name}: {', '.join(args.frameworks)} in alternating blocks of {args.block} steps", flush=True)
        results = {}
        if "scratchnet" in args.frameworks:
            times, evaluate = run_scratchnet(recipe, batches, test, peers_block, args.block, args.settle)
            results["scratchnet"] = (1e3 * statistics.median(times[WARMUP_STEPS:]), evaluate())
        while any(len(t) < len(batches) for t in peer_times.values()):
            peers_block()
        for fw in peer_steps:
            results[fw] = (1e3 * statistics.median(peer_times[fw][WARMUP_STEPS:]), peer_evals[fw]())
        peers = [ms for fw, (ms, _) in results.items() if fw != "scratchnet"] or [results["scratchnet"][0]]
        for fw, (ms, acc) in results.items():
            rows.append([name, fw, f"{ms:.1f}", f"{ms / min(peers):.2f}x", f"{acc:.4f}"])
    print()
    print(machine_line())
    print(markdown_table(["model", "framework", "ms/step (median)", "vs faster peer", "test accuracy"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
