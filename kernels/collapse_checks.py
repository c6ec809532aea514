"""collapse_checks: which of one round's chosen edges may collapse, for pipeline/decimate.py.

`collapse_checks(points, faces, low, high, counts, chosen, target, flip_cos)` -> ok [S] bool.
Chosen edge i, e = chosen[i] with ends a = low[e] and b = high[e], may collapse where
  1. the link condition holds: a and b share exactly counts[e] neighbours (a tetrahedron, a
     closed ring through the edge or a pinch would otherwise fold away or tear);
  2. the merged vertex keeps at least 3 neighbours (2 where the edge is open, counts[e] == 1);
  3. no face with exactly one corner on a or b turns over or collapses when that corner moves
     to target[e]: its unit normal's dot with its old one stays at or above flip_cos and its
     cross product is not zero.
The chosen edges' ends are neither shared nor adjacent (kernels/independent_edges.py), so
every vertex is an end of at most one of them and every face touches at most one.

Paths, chosen by device:
- Triton (CUDA tensors; CPU ones under TRITON_INTERPRET=1 through `_checks_triton`): one
  launch over the chosen edges (whose end each vertex is), one over the edges' both ends
  (each neighbour of a chosen end counted, and counted as shared where the edge to the other
  end exists: a binary search of the sorted edge keys), one over the faces (the turn test),
  one over the chosen edges (the verdict); integer atomics only. The torch twin's ~50 launches
  and two host waits a round (a sort of the ends' neighbours, the faces around) were about a
  third of the decimation's time at both of the inflate's grids (perf/RESULTS.md).
- `_checks_torch` (any device, the CPU path): the neighbours sorted and their repeats counted;
  the faces around gathered.
Both give the same verdicts: the link counts are integer work, and the turn test takes the
same IEEE float64 operations in the same order (the Triton kernel is compiled without fused
multiply-adds; the cross products and lengths are written out in both).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    from kernels.edge_modes import find_sorted
except ImportError:  # CPU-only installs: the torch twin serves every device
    triton = None

__all__ = ["collapse_checks"]

# Edges, edge ends or faces per Triton program.
BLOCK = 512
# Below this length a normal is zero: the unit vector of a zero cross product is zero.
TINY = 1e-300


def collapse_checks(
    points: torch.Tensor,
    faces: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    chosen: torch.Tensor,
    target: torch.Tensor,
    flip_cos: float,
) -> torch.Tensor:
    """points [V, 3] float64, faces [F, 3] int64, low, high [E] int64 (sorted by (low, high),
    low < high), counts [E] int64 (faces per edge), chosen [S] int64 (edge indices, ends
    neither shared nor adjacent), target [E, 3] float64 -> ok [S] bool. CUDA tensors go to
    the Triton kernels."""
    V, E = len(points), len(low)
    if points.dtype != torch.float64 or points.shape != (V, 3):
        raise ValueError(f"points must be float64 [V, 3], got {points.dtype} {tuple(points.shape)}")
    if target.dtype != torch.float64 or target.shape != (E, 3):
        raise ValueError(f"target must be float64 [{E}, 3], got {tuple(target.shape)}")
    if low.ndim != 1 or not (high.shape == counts.shape == (E,)) or chosen.ndim != 1:
        raise ValueError("low, high and counts must be [E], chosen [S]")
    if any(t.dtype != torch.int64 for t in (faces, low, high, counts, chosen)):
        raise ValueError("faces, low, high, counts and chosen must be int64")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if triton is not None and points.is_cuda:
        return _checks_triton(points, faces, low, high, counts, chosen, target, flip_cos)
    return _checks_torch(points, faces, low, high, counts, chosen, target, flip_cos)


def _owners(low: torch.Tensor, high: torch.Tensor, chosen: torch.Tensor, V: int) -> torch.Tensor:
    """[V] the index in chosen of the edge whose end each vertex is, else -1."""
    owner = torch.full((V,), -1, dtype=torch.int64, device=low.device)
    index = torch.arange(len(chosen), device=low.device)
    owner[low[chosen]] = index
    owner[high[chosen]] = index
    return owner


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[n, 3] u x v, each component one product minus another (no fused multiply-add)."""
    ux, uy, uz = u.unbind(1)
    vx, vy, vz = v.unbind(1)
    return torch.stack((uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx), 1)


def _unit(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 3] -> unit vectors (zero where the length is) and lengths, summed x, y, z in order."""
    x, y, z = vectors.unbind(1)
    length = torch.sqrt(x * x + y * y + z * z)
    return vectors / length.clamp_min(TINY)[:, None], length


def _link_torch(
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    chosen: torch.Tensor,
    owner: torch.Tensor,
    V: int,
) -> torch.Tensor:
    """[S] conditions 1 and 2: each chosen end's neighbours other than the partner, keyed by
    (edge, neighbour) and sorted; a key twice is a shared neighbour."""
    ends, other = torch.cat((low, high)), torch.cat((high, low))
    s = owner[ends]
    edge = chosen[s.clamp_min(0)]
    mine = torch.nonzero((s >= 0) & (other != low[edge]) & (other != high[edge])).squeeze(1)
    keys = torch.sort(s[mine] * V + other[mine]).values
    twice = (keys[1:] == keys[:-1]).long()
    S = len(chosen)
    common = torch.zeros(S, dtype=torch.int64, device=low.device)
    common.scatter_add_(0, keys[1:] // V, twice)
    around = torch.zeros_like(common).scatter_add_(0, keys // V, torch.ones_like(keys))
    merged = around - common  # each shared neighbour counted from both ends
    edge_counts = counts[chosen]
    return (common == edge_counts) & (merged >= 3 - (edge_counts == 1).long())


def _turns_torch(
    points: torch.Tensor,
    faces: torch.Tensor,
    owner: torch.Tensor,
    target: torch.Tensor,
    S: int,
    flip_cos: float,
) -> torch.Tensor:
    """[S] condition 3 broken: a face around the edge (one corner moving to target) turns."""
    corner_owner = owner[faces]
    moving = corner_owner >= 0
    around = torch.nonzero(moving.sum(1) == 1).squeeze(1)
    flags = torch.zeros(S, dtype=torch.int64, device=faces.device)
    if len(around) == 0:
        return flags.bool()
    f = faces[around]
    move = moving[around]
    before = points[f]
    edge = corner_owner[around].amax(1)
    after = torch.where(move[..., None], target[edge][:, None, :], before)
    n0, _ = _unit(_cross(before[:, 1] - before[:, 0], before[:, 2] - before[:, 0]))
    n1, size = _unit(_cross(after[:, 1] - after[:, 0], after[:, 2] - after[:, 0]))
    dot = n0[:, 0] * n1[:, 0] + n0[:, 1] * n1[:, 1] + n0[:, 2] * n1[:, 2]
    bad = (dot < flip_cos) | (size == 0)
    return flags.scatter_reduce_(0, edge, bad.long(), "amax").bool()


def _checks_torch(
    points: torch.Tensor,
    faces: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    chosen: torch.Tensor,
    target: torch.Tensor,
    flip_cos: float,
) -> torch.Tensor:
    """As `collapse_checks`, in torch ops on any device."""
    V, S = len(points), len(chosen)
    if S == 0:
        return torch.zeros(0, dtype=torch.bool, device=points.device)
    owner = _owners(low, high, chosen, V)
    ok = _link_torch(low, high, counts, chosen, owner, V)
    return ok & ~_turns_torch(points, faces, owner, target[chosen], S, flip_cos)


if triton is not None:

    @triton.jit(do_not_specialize=["S"])
    def _owner_kernel(low_ptr, high_ptr, chosen_ptr, owner_ptr, S, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = i < S
        e = tl.load(chosen_ptr + i, mask=inside, other=0)
        tl.store(owner_ptr + tl.load(low_ptr + e, mask=inside, other=0), i, mask=inside)
        tl.store(owner_ptr + tl.load(high_ptr + e, mask=inside, other=0), i, mask=inside)

    @triton.jit(do_not_specialize=["E", "V", "S", "steps"])
    def _link_kernel(
        low_ptr,
        high_ptr,
        keys_ptr,
        chosen_ptr,
        owner_ptr,
        tally_ptr,
        E,
        V,
        S,
        steps,
        BLOCK: tl.constexpr,
    ):
        """Over the 2E edge ends (j < E: low[j] with neighbour high[j], else the reverse): a
        chosen end's neighbour other than its partner adds 1 to tally[s], and 1 to
        tally[S + s] where the partner has an edge to it too (its key among keys, the edges'
        low * V + high in ascending order)."""
        j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = j < 2 * E
        k = tl.where(j < E, j, j - E)
        lo = tl.load(low_ptr + k, mask=inside, other=0)
        hi = tl.load(high_ptr + k, mask=inside, other=0)
        end = tl.where(j < E, lo, hi)
        other = tl.where(j < E, hi, lo)
        s = tl.load(owner_ptr + end, mask=inside, other=-1)
        mine = inside & (s >= 0)
        e = tl.load(chosen_ptr + s, mask=mine, other=0)
        partner = (
            tl.load(low_ptr + e, mask=mine, other=0)
            + tl.load(high_ptr + e, mask=mine, other=0)
            - end
        )
        mine = mine & (other != partner)
        tl.atomic_add(tally_ptr + s, 1, mask=mine)
        key = tl.minimum(partner, other) * V + tl.maximum(partner, other)
        shared = find_sorted(keys_ptr, key, E, steps, mine)
        tl.atomic_add(tally_ptr + S + s, 1, mask=mine & shared)

    @triton.jit(do_not_specialize=["F", "S"])
    def _turn_kernel(
        points_ptr,
        faces_ptr,
        owner_ptr,
        chosen_ptr,
        target_ptr,
        tally_ptr,
        F,
        S,
        FLIP_COS: tl.constexpr,
        TINY: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """Faces with exactly one corner on a chosen end: tally[2S + s] = 1 where moving that
        corner to the edge's target turns the face over or collapses it."""
        f = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = f < F
        c0 = tl.load(faces_ptr + f * 3, mask=inside, other=0)
        c1 = tl.load(faces_ptr + f * 3 + 1, mask=inside, other=0)
        c2 = tl.load(faces_ptr + f * 3 + 2, mask=inside, other=0)
        o0 = tl.load(owner_ptr + c0, mask=inside, other=-1)
        o1 = tl.load(owner_ptr + c1, mask=inside, other=-1)
        o2 = tl.load(owner_ptr + c2, mask=inside, other=-1)
        moving = (o0 >= 0).to(tl.int32) + (o1 >= 0).to(tl.int32) + (o2 >= 0).to(tl.int32)
        near = inside & (moving == 1)
        s = tl.maximum(tl.maximum(o0, o1), o2)
        e = tl.load(chosen_ptr + s, mask=near, other=0)
        tx = tl.load(target_ptr + e * 3, mask=near, other=0.0)
        ty = tl.load(target_ptr + e * 3 + 1, mask=near, other=0.0)
        tz = tl.load(target_ptr + e * 3 + 2, mask=near, other=0.0)
        ax = tl.load(points_ptr + c0 * 3, mask=near, other=0.0)
        ay = tl.load(points_ptr + c0 * 3 + 1, mask=near, other=0.0)
        az = tl.load(points_ptr + c0 * 3 + 2, mask=near, other=0.0)
        bx = tl.load(points_ptr + c1 * 3, mask=near, other=0.0)
        by = tl.load(points_ptr + c1 * 3 + 1, mask=near, other=0.0)
        bz = tl.load(points_ptr + c1 * 3 + 2, mask=near, other=0.0)
        cx = tl.load(points_ptr + c2 * 3, mask=near, other=0.0)
        cy = tl.load(points_ptr + c2 * 3 + 1, mask=near, other=0.0)
        cz = tl.load(points_ptr + c2 * 3 + 2, mask=near, other=0.0)
        # Float64 constants made exactly (a Python float beside a tensor would be float32).
        tiny = tl.full((BLOCK,), TINY, tl.float64)
        limit = tl.full((BLOCK,), FLIP_COS, tl.float64)
        nx, ny, nz, _ = _unit_normal(ax, ay, az, bx, by, bz, cx, cy, cz, tiny)
        m0, m1, m2 = o0 >= 0, o1 >= 0, o2 >= 0
        ax, ay, az = tl.where(m0, tx, ax), tl.where(m0, ty, ay), tl.where(m0, tz, az)
        bx, by, bz = tl.where(m1, tx, bx), tl.where(m1, ty, by), tl.where(m1, tz, bz)
        cx, cy, cz = tl.where(m2, tx, cx), tl.where(m2, ty, cy), tl.where(m2, tz, cz)
        ux, uy, uz, size = _unit_normal(ax, ay, az, bx, by, bz, cx, cy, cz, tiny)
        dot = nx * ux + ny * uy + nz * uz
        bad = near & ((dot < limit) | (size == 0.0))
        tl.atomic_or(tally_ptr + 2 * S + s, 1, mask=bad)

    @triton.jit
    def _unit_normal(ax, ay, az, bx, by, bz, cx, cy, cz, tiny):
        """(b - a) x (c - a) as a unit vector (zero where it is zero) and its length."""
        px, py, pz = bx - ax, by - ay, bz - az
        qx, qy, qz = cx - ax, cy - ay, cz - az
        nx = py * qz - pz * qy
        ny = pz * qx - px * qz
        nz = px * qy - py * qx
        length = tl.sqrt(nx * nx + ny * ny + nz * nz)  # float64: IEEE rounded (sqrt.rn)
        scale = tl.maximum(length, tiny)
        return nx / scale, ny / scale, nz / scale, length

    @triton.jit(do_not_specialize=["S"])
    def _verdict_kernel(counts_ptr, chosen_ptr, tally_ptr, ok_ptr, S, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = i < S
        count = tl.load(counts_ptr + tl.load(chosen_ptr + i, mask=inside, other=0), mask=inside)
        around = tl.load(tally_ptr + i, mask=inside, other=0)
        common = tl.load(tally_ptr + S + i, mask=inside, other=0) // 2  # seen from both ends
        turned = tl.load(tally_ptr + 2 * S + i, mask=inside, other=0)
        keeps = tl.where(count == 1, 2, 3)
        ok = (common == count) & (around - common >= keeps) & (turned == 0)
        tl.store(ok_ptr + i, ok.to(tl.int8), mask=inside)


def _checks_triton(
    points: torch.Tensor,
    faces: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    counts: torch.Tensor,
    chosen: torch.Tensor,
    target: torch.Tensor,
    flip_cos: float,
) -> torch.Tensor:
    """As `collapse_checks`; on CUDA (on the CPU under TRITON_INTERPRET=1)."""
    V, E, F, S = len(points), len(low), len(faces), len(chosen)
    device = points.device
    ok = torch.empty(S, dtype=torch.int8, device=device)
    if S == 0:
        return ok.view(torch.bool)
    low, high, chosen = low.contiguous(), high.contiguous(), chosen.contiguous()
    owner = torch.full((V,), -1, dtype=torch.int64, device=device)
    # Per chosen edge: neighbours of its ends, those shared (twice), whether a face turns.
    tally = torch.zeros(3 * S, dtype=torch.int32, device=device)
    _owner_kernel[(triton.cdiv(S, BLOCK),)](low, high, chosen, owner, S, BLOCK=BLOCK)
    keys = low * V + high  # ascending: the edges are sorted by (low, high)
    _link_kernel[(triton.cdiv(2 * E, BLOCK),)](
        low, high, keys, chosen, owner, tally, E, V, S, E.bit_length(), BLOCK=BLOCK
    )
    if F:
        _turn_kernel[(triton.cdiv(F, BLOCK),)](
            points.contiguous(),
            faces.contiguous(),
            owner,
            chosen,
            target.contiguous(),
            tally,
            F,
            S,
            FLIP_COS=float(flip_cos),
            TINY=TINY,
            BLOCK=BLOCK,
            enable_fp_fusion=False,
        )
    _verdict_kernel[(triton.cdiv(S, BLOCK),)](
        counts.contiguous(), chosen, tally, ok, S, BLOCK=BLOCK
    )
    return ok.view(torch.bool)
