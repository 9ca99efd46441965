"""The transform matrices of Winograd F(4x4, 5x5), exact, and the Numba loops that apply them, generated from them.

``transform_matrices`` builds ``A^T`` (4x8), ``G`` (8x5) and ``B^T`` (8x8)
from the evaluation points (Toom-Cook; the derivation is in ``winograd.py``)
in exact rational arithmetic. ``B^T``'s rows are scaled to integers (the
factor moves into ``G``), so the input transform, applied to every tile,
adds and multiplies small integers; ``A^T``'s entries are powers of 2.

The transforms of every tile (``_input_transform``, ``_output_transform``
and their adjoints, which ``winograd.py`` runs) are here too, with the loops
they run along a tile's rows and columns (``_bt_rows`` ... ``_a_columns``).
Those loops are not written by hand: :func:`_unrolled` writes each one from
its matrix, so the code is the matrix by construction
(``tests/test_fast_kernels_match_reference.py`` runs each against the matrix
product). They sit in the same file as the kernels that inline them, so that
an edit to either invalidates the kernels' Numba cache (which tracks the
kernels' own file only).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit

M_OUT = 4  # outputs per tile and axis
_ZERO = np.float32(0)  # keeps float32 arithmetic in float32; promotes exactly with float64
POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))  # the finite points of F(4, 5); the eighth is infinity


def _inverse(rows):
    """The inverse of a square matrix of Fractions (Gauss-Jordan, exact)."""
    n = len(rows)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                factor = a[r][col]
                a[r] = [u - factor * v for u, v in zip(a[r], a[col])]
    return [row[n:] for row in a]


def transform_matrices(m, r, points):
    """``(A^T, G, B^T)`` of F(m, r) at ``points`` plus infinity, exact, as float64 arrays (module docstring)."""
    def evaluation(degree):
        rows = [[Fraction(p) ** k for k in range(degree)] for p in points]
        return rows + [[Fraction(int(k == degree - 1)) for k in range(degree)]]  # infinity: the leading coefficient

    a = m + r - 1
    G, AT = evaluation(r), [list(col) for col in zip(*evaluation(m))]
    BT = [list(col) for col in zip(*_inverse(evaluation(a)))]
    for i in range(a):  # integer rows of B^T; the factor moves into G
        scale = math.lcm(*(v.denominator for v in BT[i]))
        BT[i] = [v * scale for v in BT[i]]
        G[i] = [v / scale for v in G[i]]
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])  # noqa: E731
    return as_array(AT), as_array(G), as_array(BT)


AT, G, BT = transform_matrices(M_OUT, 5, POINTS)
A_SIZE = M_OUT + 4  # the input tile: m + r - 1 = 8


# --- the transforms, unrolled from the matrices ------------------------------------------------------------
# Every transform below is a product with A^T, A, B^T or B along one axis of a tile, applied to a run of
# channels. Its loops are generated from the matrix (:func:`_unrolled`): one loop per output row, each
# storing to one place, so that LLVM vectorises it over the channels (with several stores in one loop its
# alias checks give up), and each row's sum written out with its zeros left out. The matrix products
# themselves, zeros included, would cost several times more.


def _coefficient(c):
    """A float32 constant of the generated code, by name (``_k21``, ``_k0p125``): it keeps float32 arithmetic in
    float32 and promotes exactly with float64. B^T's rows are scaled to small integers and A^T's entries are
    powers of 2, so every one is exact in float32 (checked here)."""
    if float(np.float32(c)) != c:
        raise ValueError(f"winograd: the coefficient {c} is not exact in float32")
    return "_k" + f"{c:g}".replace(".", "p")


def _terms(row, inputs):
    """``sum_k row[k] * inputs[k]`` as source: the positive terms first, then the negative ones (each in input
    order), zeros left out, and 1 and -1 without a product."""
    def term(c, x):
        return x if c == 1 else f"{_coefficient(c)} * {x}"

    positive = [term(c, x) for c, x in zip(row, inputs) if c > 0]
    negative = [term(-c, x) for c, x in zip(row, inputs) if c < 0]
    text = " + ".join(positive) if positive else "-" + negative.pop(0)
    return "".join([text, *(f" - {t}" for t in negative)])


def _unrolled(name, params, matrix, loop, source, store, guard=None, one_loop=False):
    """A Numba function ``name(params)`` that stores ``matrix @ inputs`` row by row, with its loops generated.

    ``source`` is the k-th input as an expression of the loop variable (``"w[{k} * C + c]"``); ``store`` the
    statements of output row j, with ``{sum}`` for its value (``"V[f + {j}, t, c] = {sum}"``); ``guard`` an
    optional condition of row j. One loop per row, or with ``one_loop`` a single loop that reads the inputs
    once into locals and stores every row (for the long passes along the tile rows). The generated text is
    the function's ``source`` attribute; the callers inline it (``inline="always"``), and they are cached.
    """
    lines = [f"def {name}({params}):"]
    inputs = [source.format(k=k) for k in range(matrix.shape[1])]
    if one_loop:
        lines.append(f"    for {loop}:")
        lines += [f"        x{k} = {x}" for k, x in enumerate(inputs)]
        xs = [f"x{k}" for k in range(len(inputs))]
        # Every row's value first, then the stores: all loads come before any store, as in one matrix product.
        lines += [f"        s{j} = {_terms(row, xs)}" for j, row in enumerate(matrix)]
        for j in range(len(matrix)):
            lines += ["        " + s for s in store.format(j=j, sum=f"s{j}").split("\n")]
    else:
        for j, row in enumerate(matrix):
            indent = "    "
            if guard is not None:
                lines.append(f"    if {guard.format(j=j)}:")
                indent += "    "
            lines.append(f"{indent}for {loop}:")
            lines += [indent + "    " + s for s in store.format(j=j, sum=_terms(row, inputs)).split("\n")]
    text = "\n".join(lines) + "\n"
    names = {_coefficient(abs(c)) for c in matrix.flat if c not in (0, 1, -1)}
    namespace = {n: np.float32(float(n[2:].replace("p", "."))) for n in names}
    namespace.update(A_SIZE=A_SIZE, _ZERO=_ZERO)
    exec(compile(text, f"<winograd: {name}, generated>", "exec"), namespace)
    function = njit(nogil=True, inline="always")(namespace[name])
    function.source = text
    return function


BT_T, AT_T = np.ascontiguousarray(BT.T), np.ascontiguousarray(AT.T)  # B and A

# Input transform: down the rows of a tile row (one long loop), then along each window's columns.
_bt_rows = _unrolled("_bt_rows", "xf, r, rows, L", BT, "k in range(L)", "xf[r + {k}, k]", "rows[{j}, k] = {sum}",
                     one_loop=True)
_bt_columns = _unrolled("_bt_columns", "w, V, f, t, C", BT, "c in range(C)", "w[{k} * C + c]",
                        "V[f + {j}, t, c] = {sum}")
# Its adjoint: B along each window's columns (adding into the tile row), then down the rows.
_b_columns = _unrolled("_b_columns", "v, w, C", BT_T, "c in range(C)", "v[{k} * C + c]", "w[{j} * C + c] += {sum}")
_b_rows = _unrolled("_b_rows", "rows, df, r, L", BT_T, "k in range(L)", "rows[{k}, k]", "df[r + {j}, k] += {sum}",
                    one_loop=True)
# Output transform: A^T down each column of M, then along each row, with the bias and the ReLU, dropping the
# columns past the output. ``v < 0``, not ``v > 0``: a NaN stays NaN, as numpy.maximum keeps it.
_at_columns = _unrolled("_at_columns", "M, t, nu, tmp, O", AT, "o in range(O)", "M[{k} * A_SIZE + nu, t, o]",
                        "tmp[{j}, nu, o] = {sum}")
_at_rows = _unrolled("_at_rows", "tmp, i, b, relu, y, n, oh, col0, OW, O", AT, "o in range(O)", "tmp[i, {k}, o]",
                     "v = {sum} + b[o]\ny[n, oh, col0 + {j}, o] = _ZERO if relu and v < _ZERO else v",
                     guard="col0 + {j} < OW")
# Its adjoint: A along each row of a tile's gradient, then down each column.
_a_rows = _unrolled("_a_rows", "gt, i, tmp, O", AT_T, "o in range(O)", "gt[i, {k}, o]", "tmp[i, {j}, o] = {sum}")
_a_columns = _unrolled("_a_columns", "tmp, nu, dM, t, O", AT_T, "o in range(O)", "tmp[{k}, nu, o]",
                       "dM[{j} * A_SIZE + nu, t, o] = {sum}")


@njit(cache=True, nogil=True)
def _input_transform(xpad, TH, TW, rows, V):
    """``V[f, t, c] = (B^T d_t B)[f]`` for every tile of the zero-padded images ``xpad`` (tiles image by image).

    Along the tile rows first: the windows of one row of tiles share their A_SIZE
    input rows, so ``B^T`` runs down every column of those rows at once, one
    long loop over the (column, channel) run (``rows``, (A_SIZE, Wp*C)); each
    window then needs only its row transforms.
    """
    N, Hp, Wp, C = xpad.shape
    L = Wp * C
    for n in range(N):
        xf = xpad[n].reshape(Hp, L)
        for th in range(TH):
            _bt_rows(xf, M_OUT * th, rows, L)  # rows[xi, :] = sum_i BT[xi, i] xpad[r + i, :]
            for tw in range(TW):  # V[(xi, :), t] = B^T rows[xi, window of t]
                t = (n * TH + th) * TW + tw
                q = M_OUT * tw * C
                for xi in range(A_SIZE):
                    # the window's A_SIZE columns, C channels each
                    _bt_columns(rows[xi, q : q + A_SIZE * C], V, xi * A_SIZE, t, C)


@njit(cache=True, nogil=True)
def _input_transform_adjoint(dV, TH, TW, rows, column, dxpad):
    """The adjoint of :func:`_input_transform`: ``dxpad[window of t] += B dV[:, t] B^T`` (windows overlap and add).

    The steps of the forward in reverse: each window's row adjoints add into
    ``rows`` (windows of one tile row overlap there), and one long loop then
    runs ``B`` down the columns of the whole tile row. A window's A_SIZE
    frequencies of one row are first gathered into ``column`` (A_SIZE*C), so that
    the loops read one contiguous run rather than separate rows of ``dV``.
    """
    N, Hp, Wp, C = dxpad.shape
    L = Wp * C
    for n in range(N):
        df = dxpad[n].reshape(Hp, L)
        for th in range(TH):
            rows[:] = 0
            for tw in range(TW):  # rows[xi, window of t] += B dV[(xi, :), t]
                t = (n * TH + th) * TW + tw
                q = M_OUT * tw * C
                for xi in range(A_SIZE):
                    f = xi * A_SIZE
                    for k in range(A_SIZE):
                        for c in range(C):
                            column[k * C + c] = dV[f + k, t, c]
                    _b_columns(column, rows[xi, q : q + A_SIZE * C], C)
            _b_rows(rows, df, M_OUT * th, L)  # dxpad[r + i, :] += sum_xi BT[xi, i] rows[xi, :]


@njit(cache=True, nogil=True)
def _output_transform(M, b, relu, tmp, y):
    """``y_t = A^T M[:, t] A + b`` (then the ReLU) for every tile, the parts outside ``y`` dropped."""
    N, OH, OW, O = y.shape
    TH, TW = (OH + M_OUT - 1) // M_OUT, (OW + M_OUT - 1) // M_OUT
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                for nu in range(A_SIZE):  # down each column of M: tmp[:, nu] = A^T M[(:, nu), t]
                    _at_columns(M, t, nu, tmp, O)
                for i in range(M_OUT):  # along each row: y[i, :] = A^T tmp[i, :] + b
                    oh = M_OUT * th + i
                    if oh < OH:
                        _at_rows(tmp, i, b, relu, y, n, oh, M_OUT * tw, OW, O)


@njit(cache=True, nogil=True)
def _output_transform_adjoint(g, TH, TW, gt, tmp, dM):
    """The adjoint of :func:`_output_transform` (without its epilogue): ``dM[:, t] = A g_t A^T``, ``g`` 0 outside.

    gt : (M_OUT, M_OUT, O) and tmp : (M_OUT, A_SIZE, O) scratch. Each tile's
    block of ``g`` is copied into ``gt`` first, with zeros past the output, so
    that the loops below read it without branching.
    """
    N, OH, OW, O = g.shape
    for n in range(N):
        for th in range(TH):
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                oh, ow = M_OUT * th, M_OUT * tw
                for i in range(M_OUT):  # tmp[i, :] = A g[i, :]
                    for j in range(M_OUT):
                        if oh + i < OH and ow + j < OW:
                            for o in range(O):
                                gt[i, j, o] = g[n, oh + i, ow + j, o]
                        else:
                            for o in range(O):
                                gt[i, j, o] = _ZERO
                    _a_rows(gt, i, tmp, O)
                for nu in range(A_SIZE):  # dM[(:, nu), t] = A tmp[:, nu]
                    _a_columns(tmp, nu, dM, t, O)
