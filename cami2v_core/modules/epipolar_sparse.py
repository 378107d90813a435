"""Epipolar attention that skips the pairs the mask excludes (issue 8); same softmax, far fewer scores.

At 256x256 only ~4% of the (query, key) pairs of the 32x32 level lie on an epipolar band (7% at 16x16), yet the
dense branch scores all of them: 2.17 of the 7.12 TFLOP of a CamI2V UNet forward. The camera does not change while
sampling, so each mask is turned once into gathered blocks (a `BlockLayout`) and reused by every layer, step and
guidance branch. Three layouts exist; `build_layout` builds the one its cost model (COST_*) says runs faster:

* "once": every query is in exactly one group. Within each query frame the queries are ordered either in raster
  order or by the line their band draws in a distant key frame (first and last key cell): points on one epipolar
  line of frame i map to one line in every other frame when the camera centres are (nearly) collinear, as on
  orbit, pan and zoom paths, so runs of `group_size` consecutive queries share most of their keys in all frames.
  A group's keys are the union of its members' bands over all frames, with the register tokens in front, and one
  attention call gives the members' final output: no merging at all.
* "split" (what "auto" builds first): the "once" layout of the keys in the other frames, registers included, plus
  a second "once" layout of the keys in each query's own frame, merged through their log-sum-exps. A query's
  own-frame line passes through itself and a random point (the zero-translation perturbation, spec §4.4.6), so the
  own-frame lines of queries that share their other-frame lines fan out: in one union they made about half of all
  scored pairs at the 256 model's 32x32 level while holding under a tenth of the allowed ones. Grouped apart (the
  own-frame part by the query's own-frame line), both parts' unions stay tight: 40% fewer pairs there.
* "merged": per key frame j, the queries (of all frames) with keys in j are sorted by the first and last key cell
  of their band in j, and runs of `group_size` share a union of keys in that frame only. This stays tight when the
  lines of different frame pairs are unrelated (a static camera, whose perturbed lines have a random orientation
  per pair, spec §4.4.6), but a query then appears once per key frame, and its parts are merged through their
  log-sum-exp (as flash attention merges key blocks), starting from the register tokens that every query sees.

In all three, groups of similar union size are padded to one size and attended in one call: [members] x [union keys]
with the group's small boolean mask. Few, large calls matter on a CPU: every parallel op waits for its slowest
thread, and the CPU attention kernel pays a fixed cost per query row of each call.

The softmax runs over exactly the keys the dense mask allows, so the result equals the dense masked attention up to
float round-off (tests/test_epipolar_sparse.py holds the dense reference against every path here).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# Below this many tokens the dense kernel is used outright (the 256 model's 8x8 and 4x4 levels).
MIN_SPARSE_TOKENS = 2048
# Queries per group and the most key rows one attention call gathers. "merged" groups are 64 queries (from 32 to
# 256 the time at the 32x32 level hardly moves); "once" tries each of ONCE_GROUP_SIZES and keeps the cheapest.
GROUP_SIZE = 64
ONCE_GROUP_SIZES = (16, 32, 64)
BLOCK_ROWS = 2048
LAYOUT_KINDS = ("auto", "split", "once", "merged")
# Cost model, seconds per attention head (64 channels) on the 2-core CPU of docs/performance.md, measured with
# torch's CPU flash kernel: a fixed cost per query row of an attention call, one per scored (query, key) pair,
# one per gathered key row (key and value), and for "merged" layouts one per query slot (gathering the query,
# weighting and accumulating its partial output). Dense attention costs COST_PAIR per pair of the full L x L. The
# model only ranks layouts and picks dense or gathered; docs/performance.md has the measured times.
COST_ROW = 0.4e-6
COST_PAIR = 4.5e-9
COST_GATHER = 40e-9
COST_MERGE = 60e-9


def dense_cost(length: int) -> float:
    """Modelled seconds per head of one dense masked attention over `length` tokens."""
    return COST_PAIR * length * length


@dataclass
class GroupBlock:
    """Groups padded to one union size: the unit of one attention call.

    `query_index` [G, Q] holds the members' token indices (L marks a padding slot), `key_index` [G, U] the union's
    token indices, all in the group's key frame (padding slots point at a real key and are masked off), `mask`
    [G, Q, U] says which union key each member attends (True = attend). Groups of different key frames may share a
    block, so a query can appear in a block more than once (once per key frame).
    """

    query_index: torch.Tensor
    key_index: torch.Tensor
    mask: torch.Tensor
    query_source: torch.Tensor  # [G*Q] rows to read the queries from: a padding slot reads row 0
    registers: bool = True  # "once" and "split" layouts: the register tokens are keys of this block too

    def to(self, device) -> "GroupBlock":
        """The same block on `device`."""
        return GroupBlock(*(t.to(device) for t in (self.query_index, self.key_index, self.mask, self.query_source)),
                          registers=self.registers)


@dataclass
class BlockLayout:
    """The gathered form of one [L, L] epipolar mask: its blocks plus the counts the cost model needs."""

    length: int
    frames: int
    blocks: list
    allowed: int        # True entries of the mask (query-key pairs the softmax runs over)
    scored: int         # pairs the blocks score, padding included (register columns not counted)
    kind: str = "merged"  # "once", "split" or "merged": see the module docstring
    slots: int = 0      # query rows over all groups, padding included
    key_rows: int = 0   # key rows gathered over all groups, padding included
    derived: dict = field(default_factory=dict, repr=False, compare=False)  # see `cell_major`

    def cell_major(self) -> "BlockLayout":
        """The same layout over tokens in cell-major order (token of frame t and cell p at p*T + t, the layout of
        the host temporal block's [(h w), T, C] tokens) instead of frame-major (t*h*w + p); built once."""
        if "cell_major" not in self.derived:
            L, T = self.length, self.frames
            cells = L // T

            def remap(index):  # indices >= L (padding slots, register rows) keep their meaning
                return torch.where(index < L, (index % cells) * T + index // cells, index)

            blocks = [GroupBlock(remap(b.query_index), remap(b.key_index), b.mask, remap(b.query_source),
                                 registers=b.registers) for b in self.blocks]
            self.derived["cell_major"] = BlockLayout(L, T, blocks, self.allowed, self.scored, self.kind, self.slots,
                                                     self.key_rows)
        return self.derived["cell_major"]

    @property
    def cost(self) -> float:
        """Modelled seconds per attention head of one call (see COST_*)."""
        per_slot = COST_ROW + (COST_MERGE if self.kind == "merged" else 0.0)
        merges = self.length * COST_MERGE if self.kind == "split" else 0.0  # one merge of two parts per query
        return per_slot * self.slots + COST_PAIR * self.scored + COST_GATHER * self.key_rows + merges

    @property
    def device(self) -> torch.device:
        """Where the index tensors are."""
        return self.blocks[0].mask.device if self.blocks else torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """Memory it holds: index tensors and block masks, and those of derived layouts (shared tensors counted
        once)."""
        return _distinct_bytes(self.tensors())

    def tensors(self):
        """Every tensor it holds, derived layouts included (a shared one may repeat)."""
        for b in self.blocks:
            yield from (b.query_index, b.key_index, b.mask, b.query_source)
        for layout in self.derived.values():
            yield from layout.tensors()

    def to(self, device) -> "BlockLayout":
        """The same layout on `device`."""
        return BlockLayout(self.length, self.frames, [b.to(device) for b in self.blocks], self.allowed, self.scored,
                           self.kind, self.slots, self.key_rows)


class EpipolarBlockMask:
    """A batch of epipolar masks [B, L, L] in gathered form; batch elements with the same mask share one layout.

    Build it once per trajectory with `from_dense` (or let `EpipolarAttention` build and cache it from the dense
    mask); `repeat_batch` and `to` are cheap, so guidance branches and devices reuse the same layouts.
    """

    def __init__(self, layouts: list, batch_map: list):
        if not layouts or any(not 0 <= i < len(layouts) for i in batch_map):
            raise ValueError(f"batch_map {batch_map} must index the {len(layouts)} layouts")
        self.layouts = layouts
        self.batch_map = list(batch_map)

    @classmethod
    def from_dense(cls, mask: torch.Tensor, frames: int, num_register_tokens: int = 0, group_size: int | None = None,
                   block_rows: int = BLOCK_ROWS, kind: str = "auto") -> "EpipolarBlockMask":
        """Bool mask [B, L, L] (or [B, L, R+L] with True register columns) of `frames` frames -> gathered form.

        kind: one of LAYOUT_KINDS ("auto": the cheapest by the cost model); group_size None = the kind's default."""
        mask = _strip_registers(mask, num_register_tokens)
        layouts, batch_map, sources = [], [], []
        for b in range(mask.shape[0]):
            index = _find_same(mask[b], sources)
            if index is None:
                sources.append(mask[b])
                layouts.append(build_layout(mask[b], frames, group_size, block_rows, kind))
                index = len(layouts) - 1
            batch_map.append(index)
        return cls(layouts, batch_map)

    @property
    def batch_size(self) -> int:
        """B."""
        return len(self.batch_map)

    @property
    def length(self) -> int:
        """L = T*h*w tokens per video."""
        return self.layouts[0].length

    @property
    def frames(self) -> int:
        """T."""
        return self.layouts[0].frames

    @property
    def shape(self) -> tuple:
        """(B, L, L), the shape of the dense mask this stands for."""
        return (self.batch_size, self.length, self.length)

    def dim(self) -> int:
        """3, as the dense [B, L, L] mask."""
        return 3

    @property
    def device(self) -> torch.device:
        """Where the index tensors are."""
        return self.layouts[0].device

    @property
    def density(self) -> float:
        """Fraction of query-key pairs the mask allows (registers not counted)."""
        allowed = sum(self.layouts[i].allowed for i in self.batch_map)
        return allowed / (self.batch_size * self.length ** 2)

    @property
    def scored_fraction(self) -> float:
        """Pairs the blocks score (padding included) over the dense L*L: the work left after skipping."""
        scored = sum(self.layouts[i].scored for i in self.batch_map)
        return scored / (self.batch_size * self.length ** 2)

    @property
    def nbytes(self) -> int:
        """Memory held by the layouts: index tensors and block masks."""
        return _distinct_bytes(self.tensors())

    def tensors(self):
        """Every tensor its layouts hold (see `BlockLayout.tensors`)."""
        for layout in self.layouts:
            yield from layout.tensors()

    @property
    def kinds(self) -> list:
        """The layout kind of each batch element ("split", "once" or "merged")."""
        return [self.layouts[i].kind for i in self.batch_map]

    @property
    def relative_cost(self) -> float:
        """Modelled time of the gathered attention over that of dense masked attention (< 1: gathering pays)."""
        return sum(self.layouts[i].cost for i in self.batch_map) / (self.batch_size * dense_cost(self.length))

    def cell_major(self) -> "EpipolarBlockMask":
        """The same masks over cell-major tokens (see `BlockLayout.cell_major`); the layouts are built once."""
        return EpipolarBlockMask([layout.cell_major() for layout in self.layouts], self.batch_map)

    def repeat_batch(self, n: int) -> "EpipolarBlockMask":
        """The batch repeated n times ([m0, m1] -> [m0, m1, m0, m1]), sharing the layouts."""
        return EpipolarBlockMask(self.layouts, self.batch_map * int(n))

    def to(self, device=None, dtype=None) -> "EpipolarBlockMask":
        """The same mask with its index tensors on `device` (itself when they are there already); dtype is ignored,
        as for a bool mask."""
        if device is None:
            return self
        device = torch.device(device)
        if all(layout.device == device for layout in self.layouts):
            return self
        return EpipolarBlockMask([layout.to(device) for layout in self.layouts], self.batch_map)

    # The batch operations CameraCondition applies to its masks (repeat_batch, select), so a condition can hold
    # this compact form in place of the dense bool tensor.
    def expand(self, n: int, *rest) -> "EpipolarBlockMask":
        """[1, L, L] -> [n, L, L] (only a batch of one expands, as for a tensor)."""
        if self.batch_size != 1:
            raise ValueError(f"only a batch of one expands; this block mask has batch {self.batch_size}")
        return self.repeat_batch(n)

    def repeat(self, n: int, *rest) -> "EpipolarBlockMask":
        """[B, L, L] -> [n*B, L, L] as torch.Tensor.repeat(n, 1, 1)."""
        if any(r != 1 for r in rest):
            raise ValueError(f"a block mask repeats along the batch only; got repeat({n}, {', '.join(map(str, rest))})")
        return self.repeat_batch(n)

    def __getitem__(self, index) -> "EpipolarBlockMask":
        """The samples at a batch index (int, slice, list or long tensor), batch dim kept for int-free indices."""
        picks = list(range(self.batch_size))
        if isinstance(index, int):
            chosen = [picks[index]]
        elif isinstance(index, slice):
            chosen = picks[index]
        else:
            chosen = [picks[int(i)] for i in torch.as_tensor(index).reshape(-1).tolist()]
        if not chosen:
            raise ValueError("selecting no sample of an epipolar block mask leaves nothing to attend with")
        return EpipolarBlockMask(self.layouts, [self.batch_map[i] for i in chosen])

    def to_dense(self) -> torch.Tensor:
        """Bool [B, L, L] (for tests and debugging: this is the big tensor the gathered form avoids)."""
        L = self.length
        dense = []
        for layout in self.layouts:
            m = torch.zeros(L + 1, L, dtype=torch.bool, device=layout.blocks[0].mask.device if layout.blocks
                            else None)
            for block in layout.blocks:
                g, q, u = block.mask.shape
                rows = block.query_index[:, :, None].expand(g, q, u)
                cols = block.key_index[:, None, :].expand(g, q, u)
                m.index_put_((rows[block.mask], cols[block.mask]), torch.ones((), dtype=torch.bool, device=m.device))
            dense.append(m[:L])
        return torch.stack([dense[i] for i in self.batch_map])


def _distinct_bytes(tensors) -> int:
    """Bytes of the distinct tensors among `tensors` (one counted once however often it repeats)."""
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def _strip_registers(mask: torch.Tensor, num_register_tokens: int) -> torch.Tensor:
    """[B, L, L] stays; [B, L, R+L] loses its register columns, which must all be True (spec §4.3)."""
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError(f"an epipolar mask must be a bool tensor [B, L, L], got {mask.dtype} {list(mask.shape)}")
    L = mask.shape[1]
    if mask.shape[2] == L:
        return mask
    if mask.shape[2] != L + num_register_tokens:
        raise ValueError(f"epipolar mask has shape {list(mask.shape)}; expected [B, {L}, {L}] or [B, {L}, "
                         f"{L + num_register_tokens}] with the {num_register_tokens} register columns first")
    if not bool(mask[:, :, :num_register_tokens].all()):
        raise ValueError("the register columns of an epipolar mask must all be True (every query sees the register "
                         "tokens, spec §4.3); pass the mask without them")
    return mask[:, :, num_register_tokens:]


def _version(tensor: torch.Tensor) -> int:
    """In-place change counter (inference tensors have none, and cannot change outside inference mode)."""
    return -1 if tensor.is_inference() else tensor._version


def _find_same(mask: torch.Tensor, sources: list) -> int | None:
    """Index of a source with the same contents (views of one storage are found without comparing)."""
    for i, src in enumerate(sources):
        if (src.data_ptr() == mask.data_ptr() and src.stride() == mask.stride()) or torch.equal(src, mask):
            return i
    return None


@torch.no_grad()
def build_layout(mask: torch.Tensor, frames: int, group_size: int | None = None, block_rows: int = BLOCK_ROWS,
                 kind: str = "auto") -> BlockLayout:
    """Bool [L, L] mask of `frames` frames (frame-major tokens) -> its gathered layout (see the module docstring).

    `group_size` queries share one key union (None: GROUP_SIZE for "merged", the cheapest of ONCE_GROUP_SIZES for
    "once" and "split"); a block holds groups of similar union size with at most about `block_rows` key rows in
    all, which bounds the memory of one attention call. kind "auto" builds "split" and, only when the cost model
    says a "merged" layout could beat it, "merged" too, and keeps the cheaper.
    """
    if kind not in LAYOUT_KINDS:
        raise ValueError(f"layout kind must be one of {', '.join(LAYOUT_KINDS)}, got {kind!r}")
    L = mask.shape[-1]
    if mask.dim() != 2 or mask.shape[0] != L or L % frames:
        raise ValueError(f"mask must be [L, L] with L a multiple of frames={frames}, got {list(mask.shape)}")
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if kind == "merged":
        return _merged_layout(mask, frames, group_size or GROUP_SIZE, block_rows)
    if kind == "once":
        return _once_layout(mask, frames, group_size, block_rows)
    split = _split_layout(mask, frames, group_size, block_rows)
    if kind == "split":
        return split
    # a merged layout has a slot per (query, key frame) with keys and scores at least every allowed pair
    n = L // frames
    hits = int(mask.view(L, frames, n).any(-1).sum())
    if split.cost <= (COST_ROW + COST_MERGE) * hits + COST_PAIR * split.allowed:
        return split
    merged = _merged_layout(mask, frames, group_size or GROUP_SIZE, block_rows)
    return merged if merged.cost < split.cost else split


def _split_layout(mask: torch.Tensor, frames: int, group_size: int | None, block_rows: int) -> BlockLayout:
    """The "split" layout (module docstring): a "once" layout of the keys in the other frames, with the registers,
    and one of the keys in each query's own frame, grouped by the query's own-frame line."""
    cross = _once_layout(mask, frames, group_size, block_rows, part="cross")
    own = _once_layout(mask, frames, group_size, block_rows, part="self")
    return BlockLayout(cross.length, frames, cross.blocks + own.blocks, cross.allowed + own.allowed,
                       cross.scored + own.scored, "split", cross.slots + own.slots, cross.key_rows + own.key_rows)


def _once_layout(mask: torch.Tensor, frames: int, group_size: int | None, block_rows: int,
                 part: str = "all") -> BlockLayout:
    """The "once" layout of a bool [L, L] mask (module docstring): each query in one group over all key frames.

    part "cross" keeps only the keys in other frames than the query's, "self" only those in its own frame (the
    two halves of a "split" layout; a "self" block's `registers` is False)."""
    L = mask.shape[-1]
    n = L // frames
    sizes = (group_size,) if group_size else tuple(s for s in ONCE_GROUP_SIZES if s <= max(n, ONCE_GROUP_SIZES[0]))
    rows_u8 = mask.view(torch.uint8)
    # per query frame and group size: the query order (raster, or by the line in the farthest key frame, or for
    # "self" in the query's own frame) whose groups gather the fewest keys, with its groups' unions
    choices = {size: [] for size in sizes}
    for i in range(frames):
        band = rows_u8[i * n:(i + 1) * n]  # [n, L]: the queries of frame i against every key
        if part == "cross":
            band = band.clone()
            band[:, i * n:(i + 1) * n] = 0
        elif part == "self":
            own = band[:, i * n:(i + 1) * n]
            band = band.new_zeros(band.shape)
            band[:, i * n:(i + 1) * n] = own
        line_frame = i if part == "self" else (frames - 1 if i < frames / 2 else 0)
        candidates = []
        for order in (torch.arange(n, device=mask.device), _line_order(band[:, line_frame * n:(line_frame + 1) * n])):
            unions = _unions(band.index_select(0, order), sizes)
            candidates.append((order, unions))
        for size in sizes:
            order, unions = min(candidates, key=lambda c: int(c[1][size][1].sum()))
            groups = unions[size][0].shape[0]
            pad = groups * size - n
            query_index = torch.cat([order + i * n, order.new_full((pad,), L)]).view(groups, size)
            choices[size].append((query_index, *unions[size]))
    best = None
    for size in sizes:
        query_index = torch.cat([c[0] for c in choices[size]])
        union = torch.cat([c[1] for c in choices[size]])
        counts = torch.cat([c[2] for c in choices[size]])
        cost = COST_ROW * query_index.numel() + float((_pair_cost(size) * size + COST_GATHER) * counts.sum())
        if best is None or cost < best[0]:
            best = (cost, query_index, union, counts)
    _, query_index, union, counts = best
    size = query_index.shape[1]
    by_size = torch.argsort(counts, stable=True)
    blocks, scored, key_rows = [], 0, 0
    for chunk in _split_by_rows(counts[by_size].tolist(), block_rows):
        pick = by_size[chunk]
        u = int(counts[pick].max())
        qi = query_index[pick]  # [g, Q]
        source = torch.where(qi < L, qi, 0)
        # column c of a group is its c-th union key in increasing cell order; padding columns point at cell 0
        group, cell = torch.nonzero(union[pick], as_tuple=True)  # row-major: cells ascending within each group
        starts = torch.cumsum(counts[pick], 0) - counts[pick]
        cells = torch.zeros(len(pick), u, dtype=torch.long, device=mask.device)
        cells[group, torch.arange(cell.numel(), device=mask.device) - starts[group]] = cell
        members = mask[source[:, :, None], cells[:, None, :]]  # [g, Q, u]
        valid = torch.arange(u, device=mask.device) < counts[pick][:, None]  # [g, u]: real union columns
        members &= valid[:, None, :]
        if bool((qi == L).any()):
            members &= (qi < L)[:, :, None]  # padding slots see no key (the registers keep their softmax finite)
        blocks.append(GroupBlock(qi, cells, members, source.reshape(-1), registers=part != "self"))
        scored += qi.numel() * u
        key_rows += len(pick) * u
    allowed = sum(int(b.mask.sum()) for b in blocks) if part != "all" else int(torch.count_nonzero(mask))
    return BlockLayout(L, frames, blocks, allowed, scored, "once", query_index.numel(), key_rows)


def _pair_cost(group_size: int) -> float:
    """COST_PAIR for groups of `group_size` queries: tiles of fewer than 32 rows run the CPU kernel ~1.5x slower."""
    return COST_PAIR * (1.5 if group_size < 32 else 1.0)


def _unions(members: torch.Tensor, sizes) -> dict:
    """members [m, L] uint8 (query rows in group order) -> {size: (union [G, L] bool, counts [G])} for runs of
    `size` rows (the last run padded); a size that is a multiple of a smaller one pools that one's unions."""
    m = members.shape[0]
    out = {}
    for size in sorted(sizes):
        groups = -(-m // size)
        smaller = [s for s in out if size % s == 0]
        if smaller:
            s = max(smaller)
            union, r = out[s][0], size // s
            extra = groups * r - union.shape[0]
            if extra:
                union = torch.cat([union, union.new_zeros(extra, union.shape[1])])
            union = union.view(groups, r, -1).any(1)
        else:
            pad = groups * size - m
            rows = torch.cat([members, members.new_zeros(pad, members.shape[1])]) if pad else members
            union = rows.view(groups, size, -1).amax(1).bool()
        out[size] = (union, torch.count_nonzero(union, dim=1))
    return out


def _line_order(band: torch.Tensor) -> torch.Tensor:
    """Queries ordered by the first and last key cell of their band in one key frame: band [m, n] uint8 -> [m]."""
    n = band.shape[1]
    hits = band.amax(1).bool()
    first = band.argmax(1)
    last = (n - 1) - band.flip(1).argmax(1)
    return torch.argsort(torch.where(hits, first * n + last, -1), stable=True)


def _merged_layout(mask: torch.Tensor, frames: int, group_size: int, block_rows: int) -> BlockLayout:
    """The "merged" layout of a bool [L, L] mask (module docstring): groups per key frame, merged by LSE."""
    L = mask.shape[-1]
    n = L // frames
    per_frame = mask.view(L, frames, n).view(torch.uint8)  # 0/1 bytes, no copy
    query_frame = torch.arange(L, device=mask.device) // n
    queries, keys, members_all, sizes_all, allowed = [], [], [], [], 0
    for j in range(frames):
        band = per_frame[:, j]  # [L, n]: every query against the cells of key frame j
        hits = band.amax(1).bool()
        m = int(hits.sum())
        if m == 0:
            continue
        allowed += int(torch.count_nonzero(band))
        # first and last key cell of each band: equal pairs mean (nearly) the same epipolar line; rows without a
        # key in this frame sort first and are dropped
        first = band.argmax(1)
        last = (n - 1) - band.flip(1).argmax(1)
        signature = torch.where(hits, first * n + last, -1)
        # Pool the queries of all frames (lines of different frames that coincide share keys), or keep each query
        # frame apart (better when every frame pair has its own pencil of lines, e.g. a static camera): take the
        # grouping that scores fewer pairs.
        best = None
        for key in (signature, torch.where(hits, query_frame * n * n + signature, -1)):
            rows = torch.argsort(key, stable=True)[L - m:]
            grouped = _group(band, rows, group_size, L)
            if best is None or int(grouped[3].sum()) < int(best[3].sum()):
                best = grouped
        members, query_index, union, sizes = best
        # union cells first, in increasing cell order: column u of a group is its u-th union key
        cells = torch.argsort(union, dim=1, descending=True, stable=True)[:, :int(sizes.max())]
        queries.append(query_index)
        keys.append(cells + j * n)
        members_all.append(members.gather(2, cells[:, None, :].expand(-1, group_size, -1)))
        sizes_all.append(sizes)
    blocks, scored, slots, key_rows = [], 0, 0, 0
    if queries:
        # one width for all key frames: padding columns repeat a key of the group's frame and are masked off
        widest = max(k.shape[1] for k in keys)
        keys = torch.cat([torch.cat([k, k[:, :1].expand(-1, widest - k.shape[1])], 1) for k in keys])
        members_all = torch.cat([torch.nn.functional.pad(x, (0, widest - x.shape[2])) for x in members_all])
        queries, sizes = torch.cat(queries), torch.cat(sizes_all)
        by_size = torch.argsort(sizes, stable=True)
        for chunk in _split_by_rows(sizes[by_size].tolist(), block_rows):
            pick = by_size[chunk]
            u = int(sizes[pick].max())
            query_index = queries[pick]
            source = torch.where(query_index < L, query_index, 0).reshape(-1)
            blocks.append(GroupBlock(query_index, keys[pick, :u], members_all[pick, :, :u].bool(), source))
            scored += pick.numel() * group_size * u
            slots += pick.numel() * group_size
            key_rows += pick.numel() * u
    return BlockLayout(L, frames, blocks, allowed, scored, "merged", slots, key_rows)


def _group(band: torch.Tensor, rows: torch.Tensor, group_size: int, length: int):
    """Runs of `group_size` consecutive `rows` of band [L, n] (uint8) -> members [G, Q, n], query_index [G, Q]
    (padding = length), union [G, n], union sizes [G]."""
    m, n = rows.numel(), band.shape[1]
    groups = -(-m // group_size)
    pad = groups * group_size - m
    members = band.index_select(0, torch.cat([rows, rows[:1].expand(pad)]))  # [G*Q, n]
    members[m:] = 0
    members = members.view(groups, group_size, n)
    query_index = torch.cat([rows, rows.new_full((pad,), length)]).view(groups, group_size)
    union = members.amax(1)
    return members, query_index, union, torch.count_nonzero(union, dim=1)


def _split_by_rows(sizes: list, block_rows: int, spread: float = 1.25) -> list:
    """Cut groups sorted by union size into runs padded to their largest size: a run ends when its padded key rows
    would pass block_rows or its largest size would pass `spread` x its smallest (padding is wasted work)."""
    chunks, start = [], 0
    for i in range(1, len(sizes) + 1):
        if i == len(sizes) or (i - start + 1) * sizes[i] > block_rows or sizes[i] > spread * sizes[start] + 8:
            chunks.append(slice(start, i))
            start = i
    return chunks


# -- building once per mask storage ------------------------------------------------------------------------------

def cached_block_mask(mask: torch.Tensor, frames: int, num_register_tokens: int = 0, device=None,
                      group_size: int | None = None, block_rows: int = BLOCK_ROWS,
                      kind: str = "auto") -> EpipolarBlockMask:
    """The gathered form of a dense bool mask [B, L, L] or [B, L, R+L], built once per mask and reused.

    The layouts are kept on the tensor that owns the mask's storage, so every layer, step and guidance branch that
    receives this mask or a view of it (`expand` for a batch of branches) reuses them, and they are freed with the
    mask. An in-place change of the mask (its version counter) triggers a rebuild. `device` is where the index
    tensors go (default: the mask's device).
    """
    owner = mask if mask._base is None else mask._base
    cache = owner.__dict__.setdefault("_cami2v_epipolar_layouts", {})
    stripped = _strip_registers(mask, num_register_tokens)
    device = torch.device(device) if device is not None else mask.device
    layouts, batch_map, sources = [], [], []
    for b in range(stripped.shape[0]):
        element = stripped[b]
        key = (element.data_ptr(), element.stride(), tuple(element.shape), frames, group_size, block_rows, kind,
               _version(owner), str(device))
        layout = cache.get(key)
        if layout is None:
            same = _find_same(element, sources)
            if same is not None:
                layout = layouts[same]
            else:
                layout = build_layout(element, frames, group_size, block_rows, kind).to(device)
            cache[key] = layout
        index = next((i for i, known in enumerate(layouts) if known is layout), None)
        if index is None:
            layouts.append(layout)
            sources.append(element)
            index = len(layouts) - 1
        batch_map.append(index)
    return EpipolarBlockMask(layouts, batch_map)


# -- attention --------------------------------------------------------------------------------------------------

def gathered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, register_k: torch.Tensor,
                       register_v: torch.Tensor, blocks: EpipolarBlockMask, scale: float | None = None) -> torch.Tensor:
    """Masked attention over [registers ; keys]: q, k, v [B, L, h, d], register_k/v [R, h, d] -> [B, L, h, d].

    Equals softmax(q [reg; k]^T * scale, masked by `blocks` with the register columns always on) [reg; v].
    """
    return gathered_attention_kv(q, torch.stack([k, v], dim=2), register_k, register_v, blocks, scale)


def gathered_attention_kv(q: torch.Tensor, kv: torch.Tensor, register_k: torch.Tensor, register_v: torch.Tensor,
                          blocks: EpipolarBlockMask, scale: float | None = None) -> torch.Tensor:
    """`gathered_attention` with keys and values side by side, kv [B, L, 2, h, d]."""
    B, L = kv.shape[:2]
    registers = torch.stack([register_k, register_v], dim=1).to(kv.dtype)  # [R, 2, h, d]
    kvr = torch.cat([kv, registers[None].expand(B, -1, -1, -1, -1)], dim=1)
    return gathered_attention_kvr(q, kvr, register_k.shape[0], blocks, scale)


def gathered_attention_kvr(q: torch.Tensor, kvr: torch.Tensor, num_register_tokens: int, blocks: EpipolarBlockMask,
                           scale: float | None = None) -> torch.Tensor:
    """The gathered attention with keys and values of the tokens and then of the R register tokens in one tensor:
    q [B, L, h, d], kvr [B, L+R, 2, h, d] (rows L.. are the registers, the same for every batch element) ->
    [B, L, h, d]. One gather then fetches a group's keys, values and registers together."""
    B, L, h, d = q.shape
    R = int(num_register_tokens)
    if blocks.batch_size != B or blocks.length != L:
        raise ValueError(f"epipolar block mask is for batch {blocks.batch_size} x {blocks.length} tokens but the "
                         f"tokens are [{B}, {L}]: build it from the masks of this latent size and batch")
    if R < 1:
        raise ValueError("gathered epipolar attention needs at least one register token (rows whose epipolar lines "
                         "leave every frame would otherwise have an empty softmax); use the dense path")
    if tuple(kvr.shape) != (B, L + R, 2, h, d):
        raise ValueError(f"kvr must be [B, L+R, 2, h, d] = {[B, L + R, 2, h, d]}, got {list(kvr.shape)}")
    scale = d ** -0.5 if scale is None else scale
    used = sorted(set(blocks.batch_map))
    if len(used) == 1:  # one layout for the whole batch (one video, or its guidance branches)
        return _attend(q, kvr, R, blocks.layouts[used[0]], scale)
    out = q.new_empty(B, L, h, d)
    for index in used:
        members = torch.tensor([b for b, i in enumerate(blocks.batch_map) if i == index], device=q.device)
        out[members] = _attend(q[members], kvr[members], R, blocks.layouts[index], scale)
    return out


def _attend(q, kvr, R: int, layout: BlockLayout, scale: float) -> torch.Tensor:
    """The attention of the videos that share one layout, by its kind."""
    if layout.kind == "once":
        return _once_attention(q, kvr, R, layout, scale)
    if layout.kind == "split":
        return _split_attention(q, kvr, R, layout, scale)
    return _layout_attention(q, kvr, R, layout, scale)


def _once_attention(q, kvr, R: int, layout: BlockLayout, scale: float) -> torch.Tensor:
    """q [b, L, h, d] and kvr [b, L+R, 2, h, d] sharing one "once" layout -> [b, L, h, d].

    Every query is in exactly one group, whose keys are the registers and the group's union: one attention call per
    block gives the final rows, written straight into the output."""
    b, L, h, d = q.shape
    out = q.new_empty(b, L + 1, h, d)  # row L takes the padding slots
    _attend_groups(q, kvr, R, layout.blocks, scale, out)
    return out[:, :L]


def _split_attention(q, kvr, R: int, layout: BlockLayout, scale: float) -> torch.Tensor:
    """q [b, L, h, d] and kvr [b, L+R, 2, h, d] sharing one "split" layout -> [b, L, h, d].

    Each query is in one group of the other-frame part (with the registers) and one of the own-frame part; the two
    partial softmaxes are merged through their log-sum-exps."""
    b, L, h, d = q.shape
    work = _work_dtype(q.dtype)
    out = q.new_empty(b, L + 1, h, d)  # the other-frame part, then the result (row L takes the padding slots)
    # the own-frame part starts empty (out 0, lse -inf): a group without any key is skipped
    own = q.new_zeros(b, L + 1, h, d)
    lse_other, lse_own = (torch.full((b, L + 1, h), -math.inf, dtype=work, device=q.device) for _ in range(2))
    _attend_groups(q, kvr, R, [blk for blk in layout.blocks if blk.registers], scale, out, lse_other)
    _attend_groups(q, kvr, R, [blk for blk in layout.blocks if not blk.registers], scale, own, lse_own)
    out, own, lse_other, lse_own = out[:, :L], own[:, :L], lse_other[:, :L], lse_own[:, :L]
    # the share of the own-frame keys in the softmax over both parts; the registers keep lse_other finite
    top = torch.maximum(lse_other, lse_own)
    share = (lse_own - top).exp_()
    share.div_((lse_other - top).exp_().add_(share))
    empty = torch.isneginf(lse_own)  # a query whose own-frame line has no key: an empty softmax, NaN output
    # Off the CPU the fill runs unconditionally: asking whether any row is empty would wait for the device
    # (a host sync per layer); filling nothing changes nothing.
    if q.device.type != "cpu" or bool(empty.any()):
        own.masked_fill_(empty[..., None], 0.0)
    return out.lerp_(own, share[..., None].to(q.dtype))


def _attend_groups(q, kvr, R: int, blocks: list, scale: float, out: torch.Tensor, lse: torch.Tensor | None = None):
    """The attention of every group of `blocks` (a query at most once among them): q [b, L, h, d], kvr
    [b, L+R, 2, h, d]; each member's row goes to out [b, L+1, h, d] (row L takes the padding slots) and, when `lse`
    [b, L+1, h] is given, its log-sum-exp there. A block's keys are the registers (when `block.registers`) and its
    union; a block without any key is skipped."""
    b, L, h, d = q.shape
    registers = torch.arange(L, L + R, device=q.device)
    widths = [(R if blk.registers else 0) + blk.mask.shape[2] for blk in blocks]
    # gather and mask buffers reused by every block (fresh ones would be mapped anew by the allocator each time)
    most_q = max((blk.query_source.numel() for blk in blocks), default=0)
    most_k = max((blk.mask.shape[0] * w for blk, w in zip(blocks, widths)), default=0)
    most_m = max((blk.mask.shape[0] * blk.mask.shape[1] * w for blk, w in zip(blocks, widths)), default=0)
    q_space = q.new_empty(most_q * h * d)
    kv_space = kvr.new_empty(most_k * 2 * h * d)
    with_bias = lse is None or (q.device.type == "cpu" and _cpu_flash_works())
    bias_space = q.new_empty(most_m) if with_bias else None
    for block, width in zip(blocks, widths):
        g, n_q, n_k = block.mask.shape
        if width == 0:
            continue
        r = width - n_k
        keys = torch.cat([registers.expand(g, r), block.key_index], dim=1) if r else block.key_index
        keys = keys.reshape(-1)
        mask = bias = None
        if with_bias:
            bias = bias_space[:g * n_q * width].view(g, 1, n_q, width)
            bias[..., :r] = 0
            _fill_bias(bias[..., r:], block.mask[:, None])
        else:
            mask = torch.cat([block.mask.new_ones(g, n_q, r), block.mask], dim=-1)[:, None]
        for e in range(b):
            qg = torch.index_select(q[e], 0, block.query_source, out=q_space[:g * n_q * h * d].view(g * n_q, h, d))
            qg = qg.view(g, n_q, h, d).transpose(1, 2)  # [g, h, Q, d]
            kvg = torch.index_select(kvr[e], 0, keys, out=kv_space[:g * width * 2 * h * d].view(g * width, 2, h, d))
            kg, vg = kvg.view(g, width, 2, h, d).unbind(2)
            kg, vg = kg.transpose(1, 2), vg.transpose(1, 2)  # [g, h, U, d] views
            if lse is None:
                o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias, scale=scale)  # [g, h, Q, d]
            else:
                o, rows_lse = attention_with_lse(qg, kg, vg, mask, scale, bias)
                if not r:  # a member with no key: its log-sum-exp is -inf (the CPU kernel reports 0)
                    rows_lse.masked_fill_(~block.mask.any(-1)[:, None], -math.inf)
                lse[e].index_put_((block.query_index,), rows_lse.transpose(1, 2).to(lse.dtype))
            out[e].index_put_((block.query_index,), o.transpose(1, 2))


def _fill_bias(bias: torch.Tensor, mask: torch.Tensor) -> None:
    """bias <- 0 where mask is True and -inf elsewhere, in place (bias may be a strided view).

    1 - 1 = 0 stays 0; 0 - 1 = -1 times the largest finite value, times 2, overflows to -inf. Several times faster
    on a CPU than torch.where into a strided view, and this runs for every block of every call."""
    bias.copy_(mask).sub_(1).mul_(torch.finfo(bias.dtype).max).mul_(2)


def _layout_attention(q, kvr, R: int, layout: BlockLayout, scale: float) -> torch.Tensor:
    """q [b, L, h, d] and kvr [b, L+R, 2, h, d] sharing one "merged" layout -> [b, L, h, d]."""
    b, L, h, d = q.shape
    kv = kvr  # key indices stay below L: the gathers read the token rows of kvr directly
    register_k, register_v = kvr[0, L:, 0], kvr[0, L:, 1]  # [R, h, d]
    acc_dtype = _work_dtype(q.dtype)
    # Softmax state per query row, as in flash attention: M the largest block log-sum-exp so far, S the sum of
    # exp(lse - M) and O the matching sum of block outputs. Blocks mix key frames, so a row may come several times
    # in one block: every update below (scatter max, index_add) is safe for repeated rows. Row L collects the
    # padding slots. The registers, seen by every row, start the state.
    reg_scores = torch.einsum("blhd,rhd->blhr", q, register_k.to(q.dtype)).to(acc_dtype) * scale
    top = torch.cat([reg_scores.logsumexp(-1), reg_scores.new_zeros(b, 1, h)], dim=1)  # M [b, L+1, h]
    total = torch.ones_like(top)  # S
    acc = torch.einsum("blhr,rhd->blhd", reg_scores.softmax(-1), register_v.to(acc_dtype))
    acc = torch.cat([acc, acc.new_zeros(b, 1, h, d)], dim=1)  # O [b, L+1, h, d]
    # Gather targets reused by every block: a fresh buffer of tens of MB per block would be mapped anew by the
    # allocator each time and pay a page fault per 4 KB, which made the gathers several times slower.
    most_q = max((blk.query_source.numel() for blk in layout.blocks), default=0)
    most_k = max((blk.key_index.numel() for blk in layout.blocks), default=0)
    q_space = q.new_empty(b * most_q * h * d)
    kv_space = kv.new_empty(b * most_k * 2 * h * d)
    out_space = torch.empty(b * most_q * h * d, dtype=acc_dtype, device=q.device)
    for block in layout.blocks:
        g, n_q, n_k = block.mask.shape
        rows = block.query_index.reshape(-1)
        qg = torch.index_select(q, 1, block.query_source, out=q_space[:b * g * n_q * h * d].view(b, g * n_q, h, d))
        qg = qg.view(b * g, n_q, h, d).transpose(1, 2)  # [b g, h, Q, d]
        kvg = torch.index_select(kv, 1, block.key_index.reshape(-1),
                                 out=kv_space[:b * g * n_k * 2 * h * d].view(b, g * n_k, 2, h, d))
        kvg = kvg.view(b * g, n_k, 2, h, d)
        kg, vg = kvg[:, :, 0].transpose(1, 2), kvg[:, :, 1].transpose(1, 2)  # [b g, h, U, d] views
        with _serial(q.device):
            mask = block.mask[:, None]
            if b > 1:
                mask = mask.repeat(b, 1, 1, 1)
            bias = attention_bias(mask, q)
        o, lse = attention_with_lse(qg, kg, vg, mask, scale, bias)
        with _serial(q.device):
            lse = lse.transpose(1, 2).reshape(b, g * n_q, h)
            new_top = top.scatter_reduce(1, rows[None, :, None].expand(b, -1, h), lse, "amax")
            rescale = (top - new_top).exp_()
            # exp(0) = 1 exactly where no maximum moved, so rescaling always gives the same numbers; off the CPU
            # it does, rather than wait for the device to say whether any moved (a host sync per block)
            moved = q.device.type != "cpu" or bool((new_top > top).any())
            total.mul_(rescale)
            top = new_top
            weight = (lse - top.index_select(1, rows)).exp_()  # [b, GQ, h]
            total.index_add_(1, rows, weight)
        if moved:  # a row's running maximum grew: its sums so far are rescaled to the new maximum
            acc.mul_(rescale[..., None])
        # o [b g, h, Q, d] -> weighted rows [b, G*Q, h, d], the transpose done by the multiplication itself
        weighted = out_space[:b * g * n_q * h * d].view(b * g, n_q, h, d)
        torch.mul(o.transpose(1, 2), weight.view(b * g, n_q, h, 1), out=weighted)
        acc.index_add_(1, rows, weighted.view(b, g * n_q, h, d))
    return (acc[:, :L] / total[:, :L, :, None]).to(q.dtype)


@contextlib.contextmanager
def _serial(device: torch.device):
    """Run the small per-row bookkeeping on one CPU thread: split across threads, each of these ~0.1 ms ops waits
    for every thread at its end, which costs milliseconds whenever another process holds a core."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- one masked attention call that also returns the log-sum-exp -----------------------------------------------

def attention_bias(mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor | None:
    """The additive mask (0 / -inf in q's dtype) the CPU flash kernel takes, or None when that kernel is not used."""
    if q.device.type == "cpu" and _cpu_flash_works():
        return torch.where(mask, 0.0, -math.inf).to(q.dtype)
    return None


def attention_with_lse(q, k, v, mask, scale, bias=None):
    """q [N,h,Q,d], k/v [N,h,U,d], mask bool [N,1,Q,U] -> (out [N,h,Q,d], lse [N,h,Q]); every row needs a key.

    lse is float32 for half inputs, else the input dtype. `bias` is `attention_bias(mask, q)` when already made."""
    if q.device.type == "cpu" and _cpu_flash_works():
        bias = attention_bias(mask, q) if bias is None else bias
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                              scale=scale)
        return out, lse.to(_work_dtype(q.dtype))
    return attention_with_lse_math(q, k, v, mask, scale)


def attention_with_lse_math(q, k, v, mask, scale):
    """The plain-maths version of `attention_with_lse`, in float32 for half inputs (any device)."""
    work = _work_dtype(q.dtype)
    scores = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)).mul_(scale).masked_fill_(~mask, -math.inf)
    lse = scores.logsumexp(-1)
    probs = scores.sub_(lse[..., None]).exp_()
    return torch.matmul(probs, v.to(work)).to(q.dtype), lse


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax statistics stay in float32 for half inputs and in the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_cpu_flash_state: dict = {}


def _cpu_flash_works() -> bool:
    """True when torch's CPU flash kernel (a private op that returns the log-sum-exp) exists and agrees with the
    plain maths on a small masked case; checked once, so a torch release that changes the op falls back safely."""
    if "ok" not in _cpu_flash_state:
        ok = False
        op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
        if op is not None:
            try:
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(3, 2, 5, 8, generator=g) for _ in range(3))
                mask = torch.rand(3, 1, 5, 5, generator=g) > 0.5
                mask[..., 0] = True
                bias = torch.zeros(mask.shape).masked_fill_(~mask, -math.inf)
                out, lse = op(q, k, v, 0.0, False, attn_mask=bias, scale=0.3)
                ref_out, ref_lse = attention_with_lse_math(q.double(), k.double(), v.double(), mask, 0.3)
                ok = (torch.allclose(out.double(), ref_out, atol=1e-5) and
                      torch.allclose(lse.double(), ref_lse.double(), atol=1e-5))
            except (RuntimeError, TypeError):  # missing overload or a changed signature: use the maths
                ok = False
        _cpu_flash_state["ok"] = ok
    return _cpu_flash_state["ok"]


__all__ = ["EpipolarBlockMask", "BlockLayout", "GroupBlock", "build_layout", "cached_block_mask",
           "gathered_attention", "gathered_attention_kv", "gathered_attention_kvr", "dense_cost",
           "attention_with_lse", "attention_with_lse_math", "attention_bias", "MIN_SPARSE_TOKENS", "LAYOUT_KINDS"]
