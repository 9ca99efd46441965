"""Train each zoo model in scratchnet, Keras and PyTorch, side by side.

For every model named in ``--models``, the three frameworks train the same
architecture with the same hyperparameters (the zoo's, taken from the lessons'
tutorials), on the same batches of the same data split, in this one process
on this one machine. The frameworks each own a thread pool, so they train in
alternating blocks of ``--block`` steps (scratchnet's, then Keras's, then
PyTorch's, and again), never interleaved call by call, with ``--settle``
untimed seconds between blocks for the last framework's threads to go to sleep, every core kept
busy meanwhile (``common.busy_wait``: on a virtual machine an idle core takes tens of milliseconds to
run at speed again, a cost of the pause, not of the framework). The first ``--block-warmup`` steps
of every block run untimed too. The report is a Markdown table: median milliseconds per training step (the first steps,
which compile or trace, are left out), its ratio to the faster peer (the
faster of Keras and PyTorch), and each framework's final test accuracy
(on the moving-average weights where the zoo model keeps them; next-token
accuracy on held-out text for ``charlm`` and ``transformer_lm``).

Usage::

    python bench/train.py --steps 200 --models mlp,lenet
    python bench/train.py --train-data ~/mnist --test-data ../shared/datasets/mnist-test
    python bench/train.py --fashion          # /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)
    python bench/train.py --models charlm --text corpus.txt
    python bench/train.py --models resnet,transformer_lm --steps 30   # lessons 7 and 6

The peers are written here, not in the library: TensorFlow and PyTorch are
imported only by this script.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import SETTLE_S, busy_wait, cpu_count, import_peers_first, machine_line, markdown_table

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
                busy_wait(settle)  # the peers' threads go back to sleep before scratchnet's block (cores kept awake)
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
    if name == "resnet":
        return keras_resnet(keras, hp)
    if name == "transformer_lm":
        return keras_transformer_lm(keras, hp, vocab_size)
    raise ValueError(f"bench: no Keras peer for {name!r}")


def keras_resnet(keras, hp):
    """The zoo's ``resnet`` (lesson 7): a 3x3 stem, ``ResidualBlock`` stages, global average pooling, in Keras."""
    from keras import layers as L

    def bn():
        return L.BatchNormalization(momentum=hp["bn_momentum"], epsilon=1e-3)

    def conv(filters, size, strides=1):
        return L.Conv2D(filters, size, strides=strides, padding="same", use_bias=False)

    x = inputs = keras.Input((784,))
    x = L.Reshape((28, 28, 1))(x)
    x = L.ReLU()(bn()(conv(hp["widths"][0], 3)(x)))
    for stage, width in enumerate(hp["widths"]):
        for block in range(hp["blocks_per_stage"]):
            strides = 2 if stage > 0 and block == 0 else 1
            main = bn()(conv(width, 3)(L.ReLU()(bn()(conv(width, 3, strides)(x)))))
            skip = x if x.shape[-1] == width and strides == 1 else bn()(conv(width, 1, strides)(x))
            x = L.ReLU()(L.Add()([main, skip]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10)(x))


def keras_transformer_lm(keras, hp, vocab_size):
    """The zoo's ``transformer_lm`` (lesson 6): token and position embeddings, pre-norm causal blocks, in Keras."""
    from keras import layers as L

    uniform = keras.initializers.RandomUniform(-0.05, 0.05)  # KerasNLP's TokenAndPositionEmbedding's
    D, T = hp["embedding_dim"], hp["seq_len"]

    class PositionEmbedding(L.Layer):
        def build(self, input_shape):
            self.positions = self.add_weight(shape=(T, D), initializer=uniform, name="positions")

        def call(self, x):
            return x + self.positions[: keras.ops.shape(x)[1]]

    ids = keras.Input((None,), dtype="int32")
    x = PositionEmbedding()(L.Embedding(vocab_size, D, embeddings_initializer=uniform)(ids))
    for _ in range(hp["num_blocks"]):
        n = L.LayerNormalization(epsilon=1e-5)(x)
        a = L.MultiHeadAttention(hp["num_heads"], D // hp["num_heads"], dropout=hp["dropout"])(
            n, n, use_causal_mask=True)
        x = L.Add()([x, a])
        n = L.LayerNormalization(epsilon=1e-5)(x)
        x = L.Add()([x, L.Dense(D)(L.Dense(hp["intermediate_dim"], activation="relu")(n))])
    x = L.LayerNormalization(epsilon=1e-5)(x)
    return keras.Model(ids, L.Dense(vocab_size)(x))


def keras_optimizer(hp, steps_per_epoch):
    import keras

    if hp["optimizer"] == "sgd":
        lr = hp["learning_rate"]
        if hp.get("decay_rate"):
            lr = keras.optimizers.schedules.ExponentialDecay(lr, steps_per_epoch, hp["decay_rate"])
        return keras.optimizers.SGD(lr, momentum=hp.get("momentum", 0.0))
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
    if name == "resnet":
        return torch_resnet(hp)
    if name == "transformer_lm":
        return torch_transformer_lm(hp, vocab_size)
    raise ValueError(f"bench: no PyTorch peer for {name!r}")


def torch_resnet(hp):
    """The zoo's ``resnet`` in PyTorch (NCHW, its native layout), with Keras's initializers and ``padding="same"``.

    A stride-2 3x3 convolution pads as TensorFlow's SAME does, one row and column at the bottom and right only
    (PyTorch's ``padding=1`` would pad both sides, and shift every window by a pixel).
    """
    from torch import nn

    def conv(cin, cout, size, strides=1):
        layer = nn.Conv2d(cin, cout, size, stride=strides, padding="same" if strides == 1 else 0, bias=False)
        nn.init.xavier_uniform_(layer.weight)  # Keras's glorot_uniform: the same fans for an OIHW kernel
        if strides == 1 or size == 1:  # a 1x1 stride-2 window needs no padding under SAME
            return layer
        return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), layer)

    def bn(channels):  # PyTorch's momentum is Keras's 1 - momentum
        return nn.BatchNorm2d(channels, eps=1e-3, momentum=1 - hp["bn_momentum"])

    class Block(nn.Module):
        def __init__(self, cin, width, strides):
            super().__init__()
            self.main = nn.Sequential(conv(cin, width, 3, strides), bn(width), nn.ReLU(), conv(width, width, 3),
                                      bn(width))
            self.skip = (nn.Identity() if cin == width and strides == 1
                         else nn.Sequential(conv(cin, width, 1, strides), bn(width)))

        def forward(self, x):
            return (self.main(x) + self.skip(x)).relu()

    widths = hp["widths"]
    stack = [conv(1, widths[0], 3), bn(widths[0]), nn.ReLU()]
    cin = widths[0]
    for stage, width in enumerate(widths):
        for block in range(hp["blocks_per_stage"]):
            stack.append(Block(cin, width, 2 if stage > 0 and block == 0 else 1))
            cin = width
    dense = nn.Linear(cin, 10)
    nn.init.xavier_uniform_(dense.weight)
    nn.init.zeros_(dense.bias)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.dense = nn.Sequential(*stack), dense

        def forward(self, x):
            return self.dense(self.features(x.reshape(-1, 1, 28, 28)).mean(dim=(2, 3)))

    return ResNet()


def torch_transformer_lm(hp, vocab_size):
    """The zoo's ``transformer_lm`` in PyTorch: the same pre-norm blocks, attention by ``scaled_dot_product_attention``."""
    import torch
    from torch import nn

    D, heads = hp["embedding_dim"], hp["num_heads"]

    def dense(cin, cout):
        layer = nn.Linear(cin, cout)
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_norm, self.feedforward_norm = nn.LayerNorm(D, eps=1e-5), nn.LayerNorm(D, eps=1e-5)
            self.query, self.key, self.value, self.output = (dense(D, D) for _ in range(4))
            self.intermediate, self.output_dense = dense(D, hp["intermediate_dim"]), dense(hp["intermediate_dim"], D)

        def attend(self, x):
            N, T, _ = x.shape
            q, k, v = (f(x).reshape(N, T, heads, D // heads).transpose(1, 2) for f in (self.query, self.key, self.value))
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=hp["dropout"] if self.training else 0.0)
            return self.output(a.transpose(1, 2).reshape(N, T, D))

        def forward(self, x):
            x = x + self.attend(self.attention_norm(x))
            return x + self.output_dense(self.intermediate(self.feedforward_norm(x)).relu())

    class TransformerLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(vocab_size, D)
            self.positions = nn.Parameter(torch.empty(hp["seq_len"], D))
            for table in (self.tokens.weight, self.positions):
                nn.init.uniform_(table, -0.05, 0.05)
            self.blocks = nn.Sequential(*(Block() for _ in range(hp["num_blocks"])))
            self.norm, self.softmax = nn.LayerNorm(D, eps=1e-5), dense(D, vocab_size)

        def forward(self, ids):
            x = self.tokens(ids) + self.positions[: ids.shape[1]]
            return self.softmax(self.norm(self.blocks(x)))

    return TransformerLM()


def run_torch(name, hp, batches, test, steps_per_epoch, vocab_size=None, device="cpu"):
    """``(step, evaluate)`` for the PyTorch peer; ``device="cuda"`` runs it on the GPU (cuDNN)."""
    import torch
    from torch import nn

    torch.manual_seed(hp.get("seed", 0))
    model = torch_model(name, hp, vocab_size).to(device)
    params = list(model.parameters())
    if hp["optimizer"] == "sgd":
        # Keras's momentum (m = momentum m - lr g; w += m) is PyTorch's at a constant learning rate.
        opt = torch.optim.SGD(params, lr=hp["learning_rate"], momentum=hp.get("momentum", 0.0))
    else:
        opt = torch.optim.Adam(params, lr=hp["learning_rate"])
    # The zoo regularizes the kernels of the layers it names; find them by shape (Linear weights).
    regularized = []
    if hp.get("l2"):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        regularized = [m.weight for m in (linears if name == "mlp" else linears[-1:])]
    shadows = [p.detach().clone() for p in params] if hp.get("ema_decay") else []
    carried = name == "charlm"
    takes_ids = name in ("charlm", "transformer_lm")  # token ids in, logits at every position out
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
        if hp.get("decay_rate"):  # tf.train.exponential_decay, not staircase
            for g in opt.param_groups:
                g["lr"] = hp["learning_rate"] * hp["decay_rate"] ** (i / steps_per_epoch)
        opt.zero_grad()
        if carried:
            logits, (h, c) = model(x.long(), (state["h"], state["c"]) if state else None)
            state["h"], state["c"] = h.detach(), c.detach()
            loss = ce(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        elif takes_ids:
            logits = model(x.long())
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
                logits = model(xb.long())[0] if carried else model(xb.long()) if takes_ids else model(xb)
                preds.append(logits.argmax(-1).cpu().numpy())
        return float(np.mean(np.concatenate(preds) == y))

    return train_one, evaluate


# --------------------------------------------------------------------- report


def steady(times, args):
    """The step times that count: not the first ``WARMUP_STEPS`` (compiling, tracing), nor the first
    ``--block-warmup`` of each block of ``--block`` (the cores waking after the settle)."""
    skip = min(args.block_warmup, args.block - 1)
    kept = [t for i, t in enumerate(times) if i >= WARMUP_STEPS and i % args.block >= skip]
    return kept or times[WARMUP_STEPS:]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,lenet,lstm,charlm,transformer_lm,resnet",
                   help="comma-separated zoo models (default: the six with Keras and PyTorch peers)")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of scratchnet,keras,torch")
    p.add_argument("--steps", type=int, default=100, help="training steps per model and framework (default 100)")
    p.add_argument("--block", type=int, default=20, help="steps of one framework before the next takes its turn (default 20)")
    p.add_argument("--block-warmup", type=int, default=2,
                   help="steps at the start of each block run untimed, every framework alike (default 2; 0 times all)")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help=f"untimed seconds between blocks (default {SETTLE_S}: idle BLAS and OpenMP threads spin for about 0.1 s)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--backend", default="auto", help="scratchnet backend: auto, numpy, numba, cupy")
    p.add_argument("--train-data", help="folder with MNIST IDX files (default: the data package's search path)")
    p.add_argument("--test-data", help="folder with the t10k IDX files, used when --train-data holds no test set")
    p.add_argument("--validation-size", type=int, help="training examples held out (default 5,000, as read_data_sets)")
    p.add_argument("--fashion", action="store_true", help="full Fashion-MNIST from /usr/share/datasets/fashion-mnist")
    p.add_argument("--text", help="text file for charlm and transformer_lm (default: the data package's corpus)")
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
        text = name in ("charlm", "transformer_lm")
        data = zoo.load_data(name, data=args.text if text else args.train_data, test_data=args.test_data,
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
                busy_wait(args.settle)
                for _ in range(count):
                    if len(peer_times[fw]) < len(batches):
                        start = time.perf_counter()
                        step()
                        peer_times[fw].append(time.perf_counter() - start)

        print(f"  {name}: {', '.join(args.frameworks)} in alternating blocks of {args.block} steps", flush=True)
        results = {}
        if "scratchnet" in args.frameworks:
            times, evaluate = run_scratchnet(recipe, batches, test, peers_block, args.block, args.settle)
            results["scratchnet"] = (1e3 * statistics.median(steady(times, args)), evaluate())
        while any(len(t) < len(batches) for t in peer_times.values()):
            peers_block()
        for fw in peer_steps:
            results[fw] = (1e3 * statistics.median(steady(peer_times[fw], args)), peer_evals[fw]())
        peers = [ms for fw, (ms, _) in results.items() if fw != "scratchnet"] or [results["scratchnet"][0]]
        for fw, (ms, acc) in results.items():
            rows.append([name, fw, f"{ms:.1f}", f"{ms / min(peers):.2f}x", f"{acc:.4f}"])
    print()
    print(machine_line())
    print(markdown_table(["model", "framework", "ms/step (median)", "vs faster peer", "test accuracy"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
