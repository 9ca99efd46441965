"""embedding: lookup and scatter-add gradient against tf.gather, finite differences, Numba parity."""
from __future__ import annotations

import numpy as np
import pytest

import scratchnet as sn
from helpers import assert_close, load_tensorflow, to_backend
from scratchnet.gradcheck import check_op

DTYPES = [np.float32, np.float64]

# Ids of several shapes, each with repeats (id 3 three times in the matrix);
# row 4 of the 6-row table is never picked and must get a zero gradient.
IDS = {
    "vector": np.array([3, 0, 3, 5]),
    "matrix": np.array([[3, 1, 3], [0, 3, 2]]),
    "rank3": np.array([[[1, 1], [2, 5]], [[0, 0], [0, 3]]], dtype=np.int32),
}


def tf_reference(ids, table, dY):
    tf_ = load_tensorflow()
    table_t = tf_.constant(table)
    with tf_.GradientTape() as tape:
        tape.watch(table_t)
        Y = tf_.gather(table_t, ids)
        loss = tf_.reduce_sum(Y * dY)
    # The gradient of a gather is IndexedSlices; densifying it sums repeated ids.
    return Y.numpy(), tf_.convert_to_tensor(tape.gradient(loss, table_t)).numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", list(IDS))
def test_embedding_matches_tf_gather_and_sums_repeated_ids(backend, shape, dtype):
    rng = np.random.default_rng(0)
    ids = IDS[shape]
    table = rng.standard_normal((6, 4)).astype(dtype)
    dY = rng.standard_normal(ids.shape + (4,)).astype(dtype)
    Y, bp = sn.ops.embedding(*to_backend(backend, ids, table))
    dtable = bp(to_backend(backend, dY))
    want_Y, want_dtable = tf_reference(ids, table, dY)
    assert Y.shape == ids.shape + (4,) and Y.dtype == dtype
    assert dtable.dtype == dtype
    assert_close(sn.to_numpy(Y), want_Y, dtype, "y")
    assert_close(sn.to_numpy(dtable), want_dtable, dtype, "dtable")
    np.testing.assert_array_equal(sn.to_numpy(dtable)[4], 0)


def test_embedding_gradient_of_an_id_used_three_times_is_the_sum(backend):
    ids = np.array([2, 2, 2])
    dY = np.array([[1.0], [10.0], [100.0]], dtype=np.float32)
    _, bp = sn.ops.embedding(*to_backend(backend, ids, np.zeros((3, 1), np.float32)))
    np.testing.assert_array_equal(sn.to_numpy(bp(to_backend(backend, dY))), [[0.0], [0.0], [111.0]])


def test_embedding_gradient_matches_finite_differences(rng):
    ids = IDS["matrix"]
    table = rng.standard_normal((6, 4))
    R = rng.standard_normal(ids.shape + (4,))
    with sn.use_backend("numpy"):
        check_op(sn.ops.embedding, ids, table, dy=R)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_scatter_add_matches_the_reference(dtype):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, size=(20, 3))  # many repeats among 60 ids
    dY = rng.standard_normal((20, 3, 5)).astype(dtype)
    with sn.use_backend("numpy") as ref, sn.use_backend("numba") as fast:
        want = ref.embedding_backward(ids, dY, 9)
        got = fast.embedding_backward(ids, dY, 9)
    assert got.dtype == dtype and got.shape == (9, 5)
    assert_close(got, want, dtype, "dtable")


def test_embedding_backprop_does_not_mutate_its_gradient(backend):
    ids, table = to_backend(backend, IDS["matrix"], np.ones((6, 4), np.float32))
    _, bp = sn.ops.embedding(ids, table)
    dY = to_backend(backend, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    bp(dY)
    np.testing.assert_array_equal(sn.to_numpy(dY), np.arange(24, dtype=np.float32).reshape(2, 3, 4))


@pytest.mark.parametrize(
    "ids, table, message",
    [
        (np.array([0, 6]), np.zeros((6, 2), np.float32), r"embedding: ids must lie in \[0, 6\) \(table has 6 rows\), found 6"),
        (np.array([[-1, 2]]), np.zeros((6, 2), np.float32), r"embedding: ids must lie in \[0, 6\).*found -1"),
        (np.array([0.0, 1.0]), np.zeros((6, 2), np.float32), r"embedding: ids must be integers, got float"),
        (np.array([True, False]), np.zeros((6, 2), np.float32), r"embedding: ids must be integers, got bool"),
        (np.array([0, 1]), np.zeros(6, np.float32), r"embedding: table must have rank 2"),
        (np.array([0, 1]), np.zeros((6, 2), np.int64), r"embedding: table must be float32 or float64"),
    ],
)
def test_embedding_rejects_bad_input_naming_the_op(backend, ids, table, message):
    with pytest.raises(ValueError, match=message):
        sn.ops.embedding(*to_backend(backend, ids, table))


def test_embedding_backprop_rejects_a_gradient_of_the_wrong_shape(backend):
    _, bp = sn.ops.embedding(*to_backend(backend, IDS["vector"], np.zeros((6, 2), np.float32)))
    with pytest.raises(ValueError, match=r"embedding: dy must have the output's shape \(4, 2\)"):
        bp(to_backend(backend, np.zeros((4, 3), np.float32)))
