"""TensorBoard as the lessons use it: graphs traced from the zoo models, shared variables, histograms, images, text.

Every run is read back with TensorBoard's own reader (``EventAccumulator``),
as the GRAPHS, HISTOGRAMS and IMAGES tabs read it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import cli, image_grid
from scratchnet.zoo import shared_weights

# TensorBoard's own reader checks the files. In CI it must run (a missing install is an error there);
# elsewhere a missing TensorBoard skips these tests, saying so.
if not os.environ.get("CI"):
    pytest.importorskip("tensorboard", reason="TensorBoard reads the event files back; install scratchnet[test]")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tensorboard.md"


@pytest.fixture(autouse=True)
def reference_backend():
    with sn.use_backend("numpy"):
        yield


def read(run):
    acc = EventAccumulator(str(run), size_guidance={"histograms": 0, "images": 0, "scalars": 0})
    acc.Reload()
    return acc


def graph_of(run):
    """``{name: node}`` of the run's GraphDef, as the GRAPHS tab reads it."""
    return {n.name: n for n in read(run).Graph().node}


def inputs(graph, name):
    return list(graph[name].input)


def output_shapes(node):
    return [tuple(d.size for d in s.dim) for s in node.attr["_output_shapes"].list.shape]


def digits(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def test_mlp_graph_has_one_node_per_op_and_per_parameter_with_edges_from_both(tmp_path):
    recipe = sn.zoo.build("mlp", hidden=16)
    x, y = digits(4)
    sn.summary.write_graph(tmp_path, recipe.model, x, y)
    g = graph_of(tmp_path)
    assert inputs(g, "layer1/dense") == ["input", "layer1/kernel", "layer1/bias"]
    assert inputs(g, "layer1/relu") == ["layer1/dense"]
    assert inputs(g, "layer2/dense") == ["layer1/relu", "layer2/kernel", "layer2/bias"]
    assert inputs(g, "softmax_cross_entropy") == ["layer2/dense", "labels"]
    assert g["layer1/kernel"].op == "VariableV2" and output_shapes(g["layer1/kernel"]) == [(784, 16)]
    assert g["input"].op == "Placeholder" and output_shapes(g["input"]) == [(4, 784)]
    assert output_shapes(g["layer1/relu"]) == [(4, 16)] and g["layer1/relu"].attr["T"].type == 1  # DT_FLOAT


def test_lenet_graph_scopes_each_layer_and_passes_edges_through_reshape_and_flatten(tmp_path):
    recipe = sn.zoo.build("lenet", conv1=4, conv2=4, fc=8)
    sn.summary.write_graph(tmp_path, recipe.model, digits(2)[0], training=True)
    g = graph_of(tmp_path)
    assert inputs(g, "layer1-conv1/conv2d") == ["input", "layer1-conv1/kernel", "layer1-conv1/bias"]
    assert g["layer1-conv1/conv2d"].attr["padding"].s == b"SAME"
    assert inputs(g, "layer2-pool1/max_pool2d") == ["layer1-conv1/relu"]
    assert inputs(g, "layer5-fc1/dense")[0] == "layer4-pool2/max_pool2d"  # through Flatten
    assert inputs(g, "dropout/dropout") == ["layer5-fc1/relu"]            # training mode
    assert inputs(g, "layer6-fc2/dense")[0] == "dropout/dropout"
    assert output_shapes(g["layer4-pool2/max_pool2d"]) == [(2, 7, 7, 4)]


def test_lstm_classifier_graph_shows_each_lstm_as_one_node_with_its_time_steps(tmp_path):
    recipe = sn.zoo.build("lstm", units=8, layers=2)
    sn.summary.write_graph(tmp_path, recipe.model, digits(3)[0])
    g = graph_of(tmp_path)
    lstm1 = g["lstm1/lstm"]
    assert lstm1.attr["time_steps"].i == 28 and lstm1.attr["units"].i == 8
    assert list(lstm1.input) == ["input", "lstm1/kernel", "lstm1/recurrent_kernel", "lstm1/bias"]
    assert output_shapes(lstm1) == [(3, 28, 8), (3, 8), (3, 8)]           # ys, h, c
    assert inputs(g, "lstm2/lstm")[0] == "lstm1/lstm"
    assert inputs(g, "output/dense")[0] == "lstm2/lstm:1"                  # the last layer's h
    assert not any(name.startswith("dropout") for name in g)              # inference: no dropout op


def test_charlm_graph_is_named_by_its_store_scope_and_leaves_the_state_alone(tmp_path):
    recipe = sn.zoo.build("charlm", vocab_size=12, embedding_size=4, units=6)
    model = recipe.model
    ids = np.arange(10, dtype=np.int32).reshape(2, 5)
    model(ids)
    state, rng = model.layers[1].states, sn.random.get_state()
    sn.summary.write_graph(tmp_path, model, ids, (ids + 1) % 12)
    assert model.layers[1].states is state and sn.random.get_state() == rng
    g = graph_of(tmp_path)
    assert inputs(g, "charlm/embedding/embedding") == ["input", "charlm/embedding/embeddings"]
    assert inputs(g, "charlm/lstm/lstm") == ["charlm/embedding/embedding", "charlm/lstm/kernel",
                                             "charlm/lstm/recurrent_kernel", "charlm/lstm/bias",
                                             "charlm/lstm/h0", "charlm/lstm/c0"]  # the carried state
    assert g["charlm/lstm/h0"].op == "Placeholder" and g["charlm/lstm/lstm"].attr["time_steps"].i == 5
    assert inputs(g, "softmax_cross_entropy") == ["charlm/softmax/dense", "labels"]


def consumers(graph, name):
    return {n.name for n in graph.values() if name in n.input}


def test_shared_parameters_are_one_node_with_edges_into_train_and_test(tmp_path):
    paths = shared_weights.write_lesson(tmp_path, units=4, train_batch=5, test_batch=1)
    g = graph_of(paths["shared"])
    params = sorted(n for n, node in g.items() if node.op == "VariableV2")
    assert params == sorted(p.name for p in shared_weights.train_and_test_models(True, 4)[0].parameters())
    assert all(p.startswith("model/") for p in params)
    for p in params:
        assert {c.split("/")[0] for c in consumers(g, p)} == {"Train", "Test"}, p
    assert consumers(g, "model/lstm/kernel") == {"Train/model/lstm/lstm", "Test/model/lstm/lstm"}
    assert output_shapes(g["Train/input"]) == [(5, 784)] and output_shapes(g["Test/input"]) == [(1, 784)]
    assert "Train/model/dropout/dropout" in g and "Train/softmax_cross_entropy" in g
    assert not any(n.startswith("Test/") and "dropout" in n for n in g)


def test_unshared_models_get_two_sets_of_parameter_nodes(tmp_path):
    g = graph_of(shared_weights.write_lesson(tmp_path, units=4, train_batch=5)["unshared"])
    params = [n for n, node in g.items() if node.op == "VariableV2"]
    assert len(params) == 14 and not any(p.startswith("model/") for p in params)
    assert consumers(g, "Train/model/lstm/kernel") == {"Train/model/lstm/lstm"}
    assert consumers(g, "Test/model/lstm/kernel") == {"Test/model/lstm/lstm"}


class Gate(sn.Layer):
    """A user's layer made of ops: ``x * sigmoid(x @ kernel)``."""

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (input_shape[-1], input_shape[-1]), "glorot_uniform")

    def call(self, x, training=False):
        z, dense_backprop = sn.ops.dense(x, self.kernel.value)
        g, sigmoid_backprop = sn.ops.sigmoid(z)

        def backprop(dy):
            dx, dw, _ = dense_backprop(sigmoid_backprop(dy * x))
            self.kernel.accumulate(dw)
            return dx + dy * g

        return x * g, backprop


def test_a_custom_layer_appears_under_its_name_with_its_ops(tmp_path):
    model = sn.Sequential([sn.layers.Dense(6, name="first"), Gate(name="gate"), sn.layers.Dense(2, name="last")])
    sn.summary.write_graph(tmp_path, model, np.ones((3, 5), np.float32))
    g = graph_of(tmp_path)
    assert inputs(g, "gate/dense") == ["first/dense", "gate/kernel"]
    assert inputs(g, "gate/sigmoid") == ["gate/dense"]
    # x * g is not an op: the edge into the next layer runs from the gate's last op.
    assert inputs(g, "last/dense") == ["gate/sigmoid", "last/kernel", "last/bias"]
    assert [n for n, node in g.items() if node.op == "Placeholder"] == ["input"]


def test_write_graph_refuses_a_run_without_an_example_input(tmp_path):
    model = sn.Sequential([sn.layers.Dense(2)])
    with pytest.raises(ValueError, match="write_graph: run 'Train' must be"):
        sn.summary.write_graph(tmp_path, {"Train": (model,)})


def test_fit_writes_the_graph_and_histograms_every_epoch_and_images_at_each_evaluation(tmp_path):
    sn.random.seed(0)
    x, y = digits(40)
    model = sn.Sequential([sn.layers.Dense(8, activation="relu", name="hidden"), sn.layers.Dense(10, name="logits")])
    model.compile("adam", loss="sparse_categorical_crossentropy")
    tb = sn.callbacks.TensorBoard(str(tmp_path), histogram_freq=2, write_images=(x[:20], y[:20]))
    model.fit(x, y, batch_size=10, epochs=4, validation_data=(x[:20], y[:20]), callbacks=[tb], verbose=0)
    tb.close()
    train, test = read(tmp_path / "train"), read(tmp_path / "test")
    assert "hidden/dense" in {n.name for n in train.Graph().node}
    tags = train.Tags()["histograms"]
    assert {"weights/hidden/kernel", "gradients/hidden/kernel", "activations/hidden", "activations/logits"} <= set(tags)
    assert [e.step for e in train.Histograms("weights/hidden/kernel")] == [8, 16]  # the ends of epochs 2 and 4
    assert [e.step for e in test.Images("predictions")] == [4, 8, 12, 16]
    image = test.Images("predictions")[0]
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width == 8 * 64


def test_train_cli_writes_graph_histograms_and_images(tmp_path):
    from test_cli import _digits
    from scratchnet.data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 40)):
        images, labels = _digits(n, rng)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    logdir = tmp_path / "run"
    assert cli.main(["train", "mlp", "--data", str(tmp_path), "--validation-size", "20", "--steps", "4",
                     "--log-every", "2", "--logdir", str(logdir), "--backend", "numpy", "--no-download",
                     "--no-progress", "--batch-size", "20", "--histograms", "2"]) == 0
    train, test = read(logdir / "train"), read(logdir / "test")
    graph = {n.name: n for n in train.Graph().node}
    assert list(graph["layer1/dense"].input) == ["input", "layer1/kernel", "layer1/bias"]
    assert list(graph["softmax_cross_entropy"].input) == ["layer2/dense", "labels"]
    assert {"weights/layer1/kernel", "gradients/layer2/bias", "activations/layer1"} <= set(train.Tags()["histograms"])
    assert [e.step for e in train.Histograms("weights/layer1/kernel")] == [2, 4]
    assert "predictions" in test.Tags()["images"]


def test_images_are_only_drawn_from_image_data():
    assert image_grid.as_images(np.zeros((2, 784), np.float32)).shape == (2, 28, 28)
    assert image_grid.as_images(np.zeros((2, 50), np.int32)) is None      # a language model's token rows
    with pytest.raises(ValueError, match="write_images needs images"):
        sn.callbacks.TensorBoard("unused", write_images=(np.zeros((2, 50), np.int32), np.zeros(2)))


def test_prediction_grids_caption_predictions_and_rank_the_surest_mistakes():
    images = np.zeros((4, 28, 28))
    logits = np.array([[5.0, 0, 0], [0, 9, 0], [0, 0, 1], [3, 0, 0]])
    grids = image_grid.prediction_grids(images, np.array([0, 0, 2, 1]), logits, columns=2)
    assert grids["predictions"].shape[:2] == (2 * (56 + 10 + 12), 2 * 64)   # 2 x 2 cells of 28 x 28 digits, drawn 2x
    mistakes = grids["confident_mistakes"]
    assert mistakes.shape[1] == 2 * 64 and mistakes.dtype == np.uint8
    assert (mistakes == image_grid.RED).all(axis=-1).any()


def test_the_tensorboard_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = PAGE.read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"^```python\n(.*?)^```", text, re.S | re.M))
    exec(compile(code, "docs/tensorboard.md", "exec"), {"__name__": "tensorboard_page"})
    assert read(tmp_path / "runs/tour/train").Tags()["histograms"]
    assert read(tmp_path / "runs/tour/test").Tags()["images"]
    assert "softmax_cross_entropy" in graph_of(tmp_path / "runs/tour/graph")
    assert "model/lstm/kernel" in graph_of(tmp_path / "runs/sharing/shared")


# -- figures a learner reads -----------------------------------------------------------------------------
def test_the_samples_held_out_digits_are_shuffled_so_the_images_grid_shows_all_ten_classes(monkeypatch):
    from scratchnet.data import sample

    monkeypatch.setattr(sample, "_real_test_set", lambda test_path: None)  # no real test set: hold 1,000 out
    data = sample.load_sample(fetch=False)
    labels = np.asarray(data.test.labels)
    assert np.bincount(labels, minlength=10).tolist() == [100] * 10
    assert set(labels[:32].tolist()) == set(range(10))       # the IMAGES grid's 32 digits (of the first 500 shown)
    again = sample.load_sample(fetch=False)
    np.testing.assert_array_equal(np.asarray(again.test.labels), labels)   # a fixed seed: the same split every time
    images = np.asarray(data.test.images[:32]).reshape(-1, 28, 28)
    grid = image_grid.prediction_grids(images, labels[:32], np.eye(10)[labels[:32]], count=32)["predictions"]
    assert grid.shape[1] == 8 * 64                                  # 8 columns of captioned digits, 4 rows
    assert not (grid == image_grid.RED).all(axis=-1).any()           # every caption right: all green


def test_the_text_tab_says_why_test_accuracy_can_beat_train_accuracy(tmp_path):
    sn.random.seed(0)
    recipe = sn.zoo.build("lenet")                       # dropout 0.5 and a moving average of the weights
    x, y = digits(20)
    recipe.train_step(x, y)
    tb = sn.callbacks.TensorBoard(str(tmp_path))
    tb.set_model(recipe.model)
    with recipe.ema.averaged(recipe.model):             # as recipe.evaluate: on the moving averages
        tb.on_test_end({"accuracy": 0.5, "loss": 1.0})
    tb.on_test_end({"accuracy": 0.6, "loss": 0.9})       # written once per run
    tb.close()
    (event,) = read(tmp_path / "test").Tensors("about/test_vs_train/text_summary")
    note = event.tensor_proto.string_val[0].decode()
    assert note.startswith("**Why the test curve can sit above the train curve.**")
    assert "with dropout on (`dropout` drops 50% of its inputs)" in note
    assert "with dropout off" in note and "on the moving averages of the weights (decay 0.99)" in note
    assert "not a sign that test examples leaked into training" in note

    plain = sn.Sequential([sn.layers.Dense(3)])
    plain.build((None, 4))
    note = sn.callbacks.tensorboard.why_test_beats_train(plain, averaged=False)
    assert "dropout" not in note and "moving averages" not in note
    assert "Test accuracy can still be above training accuracy" in note
