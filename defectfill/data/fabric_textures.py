"""Procedural fabric textures: woven and knitted structures rendered yarn by yarn.

A fabric is drawn from a seed in two steps. `sample_params` draws everything random (thread
density, rotation, yarn colours and widths, irregularities, lighting, noise) into a
`FabricParams`; `render_structure` turns those parameters into a float RGB picture, optionally
with `YarnEdits` (yarns missing over a segment, a hole) so that structural defects are rendered
*in* the weave rather than pasted on top. Because all randomness lives in `FabricParams`, the same
parameters rendered with and without edits give identical pixels wherever the edits do not reach.

Weaves are a warp (vertical, index i) and a weft (horizontal, index j) yarn system on a slightly
rotated lattice. Each lattice cell says which yarn lies on top (`warp_up`); a yarn is drawn as a
cylinder (Lambert shading across it), darkened where it dives under the crossing yarn at the ends
of a float; gaps between yarns show the dark interior. The knit ("rib") draws V-shaped stitches in
knit wales and recessed loop heads in purl wales.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

SIMPLE_TEXTURES: tuple[str, ...] = ("plain", "twill", "satin", "rib")
COMPLEX_TEXTURES: tuple[str, ...] = ("check", "print", "herringbone", "jacquard")
TEXTURES: tuple[str, ...] = SIMPLE_TEXTURES + COMPLEX_TEXTURES


@dataclass
class FabricParams:
    """Every random choice of one fabric image; arrays indexed by yarn (i - i0, j - j0)."""

    texture: str
    height: int
    width: int
    knit: bool
    pitch_u: float  # warp spacing in pixels (wale width for knits)
    pitch_v: float  # weft spacing in pixels (course height for knits)
    angle: float  # lattice rotation, radians
    offset_u: float
    offset_v: float
    i0: int
    j0: int
    warp_up: np.ndarray  # (n_u, n_v) bool: warp over weft in this cell
    warp_width: np.ndarray  # (n_u, n_v) float: yarn width as a fraction of the pitch
    weft_width: np.ndarray  # (n_u, n_v)
    warp_color: np.ndarray  # (n_u, 3) float RGB in [0, 1]
    weft_color: np.ndarray  # (n_v, 3)
    cell_gain: np.ndarray  # (n_u, n_v) brightness irregularity of the yarn in each cell
    gap_color: np.ndarray  # (3,) colour seen between yarns
    hole_color: np.ndarray  # (3,) colour seen through a hole (what lies behind the fabric)
    light: np.ndarray  # (3,) unit light direction (x, y, z), z towards the viewer
    wave_u: np.ndarray  # (H, W) float32 yarn meander, pixels
    wave_v: np.ndarray
    lighting: np.ndarray  # (H, W) float32 illumination gain
    pixel_noise: np.ndarray  # (H, W) float32 fibre noise, already scaled
    knit_cols: np.ndarray | None = None  # (n_u,) bool knit wale (True) or purl wale (False)
    print_spec: dict = field(default_factory=dict)  # printed pattern for "print"
    cell_table: np.ndarray = field(default=None, repr=False)  # see `cell_table`, filled on creation

    def __post_init__(self) -> None:
        if self.cell_table is None:
            self.cell_table = cell_table(self)


@dataclass
class YarnEdits:
    """Structural changes to render: yarns missing (broken, torn) and where the backing shows."""

    warp_present: np.ndarray | None = None  # (H, W) bool; False where the warp yarn is missing
    weft_present: np.ndarray | None = None
    hole: np.ndarray | None = None  # (H, W) bool; gaps here show `hole_color`
    recess: np.ndarray | None = None  # (H, W) float gain; <1 where loose yarns sink into a gap


@lru_cache(maxsize=8)
def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 (yy, xx) pixel coordinates of an image, cached per size."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _interp_weights(n: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.linspace(0.5, g - 1.5, n, dtype=np.float32)
    k = np.floor(pos).astype(np.int64)
    t = pos - k
    # smoothstep weights avoid the visible grid creases of plain bilinear interpolation
    return k, (t * t * (3 - 2 * t)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random grid of ~`cells` per side, smoothly upsampled."""
    height, width = shape
    gh = max(2, round(cells * height / max(height, width))) + 2
    gw = max(2, round(cells * width / max(height, width))) + 2
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    ky, ty = _interp_weights(height, gh)
    kx, tx = _interp_weights(width, gw)
    rows = grid[ky] * (1 - ty[:, None]) + grid[ky + 1] * ty[:, None]  # (H, gw), separable and cheap
    return rows[:, kx] * (1 - tx) + rows[:, kx + 1] * tx


def to_fabric_coords(p: FabricParams, x: np.ndarray | float, y: np.ndarray | float):
    """Pixel (x, y) -> lattice coordinates (u along the weft, v along the warp), without meander."""
    c, s = np.cos(p.angle), np.sin(p.angle)
    u = c * x + s * y + p.offset_u
    v = -s * x + c * y + p.offset_v
    return u, v


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def _random_color(rng: np.random.Generator, sat=(0.08, 0.7), val=(0.35, 0.9)) -> np.ndarray:
    return _hsv(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))


def _vary(rng: np.random.Generator, color: np.ndarray, n: int, amount: float) -> np.ndarray:
    """`n` copies of `color` with a per-yarn brightness jitter (dye lots, yarn twist)."""
    gain = 1.0 + rng.normal(0.0, amount, size=(n, 1)).astype(np.float32)
    return np.clip(color[None, :] * gain, 0.0, 1.0).astype(np.float32)


def _smooth_along_v(a: np.ndarray, passes: int = 2) -> np.ndarray:
    """Smooth a per-cell array along the yarn (axis 1) so thickness varies gradually along a yarn."""
    for _ in range(passes):
        a = 0.25 * np.roll(a, 1, axis=1) + 0.5 * a + 0.25 * np.roll(a, -1, axis=1)
    return a


def _stripe_colors(rng: np.random.Generator, n: int, start: int, palette: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Colour of yarn k (absolute index start + k) for a repeating colour-stripe sequence."""
    seq = np.repeat(np.arange(len(widths)), widths)
    idx = seq[(np.arange(n) + start) % len(seq)]
    return palette[idx]


def _weave_pattern(texture: str, rng: np.random.Generator, I: np.ndarray, J: np.ndarray) -> np.ndarray:
    """warp_up (warp over weft) for the lattice cells with absolute yarn indices (I, J)."""
    if texture in ("plain", "print"):
        return (I + J) % 2 == 0
    if texture == "twill":
        n = int(rng.choice([3, 4]))
        k = int(rng.choice([1, n // 2, n - 1])) if n == 4 else int(rng.choice([1, 2]))
        sign = int(rng.choice([-1, 1]))
        return ((I + sign * J) % n) < k
    if texture == "satin":
        n, step = [(5, 2), (5, 3), (8, 3), (8, 5)][int(rng.integers(4))]
        sunk = ((I * step + J) % n) == 0
        # warp-faced (sateen the other way round) satin: long floats of one yarn system
        return ~sunk if rng.uniform() < 0.7 else sunk
    if texture == "check":
        if rng.uniform() < 0.5:
            return (I + J) % 2 == 0
        return ((I + J) % 4) < 2
    if texture == "herringbone":
        band = int(rng.choice([4, 6, 8, 10]))
        sign = np.where((I // band) % 2 == 0, 1, -1)
        return ((I + sign * J) % 4) < 2
    if texture == "jacquard":
        n, step = (5, 2) if rng.uniform() < 0.5 else (8, 3)
        sunk = ((I * step + J) % n) == 0
        tile_u = int(rng.integers(14, 30))
        tile_v = int(rng.integers(14, 30))
        fu = (I % tile_u) / tile_u - 0.5
        fv = (J % tile_v) / tile_v - 0.5
        kind = int(rng.integers(3))
        if kind == 0:  # diamonds
            figure = (np.abs(fu) + np.abs(fv)) < rng.uniform(0.25, 0.42)
        elif kind == 1:  # medallion with petals
            r = np.hypot(fu, fv)
            phi = np.arctan2(fv, fu)
            figure = r < rng.uniform(0.22, 0.32) * (1 + 0.35 * np.cos(int(rng.integers(4, 8)) * phi))
        else:  # scrolls: a thresholded sum of waves, tiled
            figure = (np.sin(2 * np.pi * (fu + 0.3 * np.sin(2 * np.pi * fv))) + np.cos(4 * np.pi * fv)) > 0.4
        return np.where(figure, ~sunk, sunk)
    raise ValueError(texture)  # callers validate names; this is unreachable for valid input


def sample_params(texture: str, rng: np.random.Generator, height: int, width: int) -> FabricParams:
    """Draw one fabric of `texture` (validated by the caller) from `rng`."""
    knit = texture == "rib"
    if knit:
        pitch_u = float(rng.uniform(5.0, 9.0))
        pitch_v = pitch_u * float(rng.uniform(0.65, 0.85))
    else:
        pitch_u = float(rng.uniform(3.8, 7.5))
        pitch_v = pitch_u * float(rng.uniform(0.8, 1.2))
    angle = float(np.deg2rad(rng.uniform(-3.0, 3.0)))
    offset_u = float(rng.uniform(0, 200))
    offset_v = float(rng.uniform(0, 200))
    c, s = np.cos(angle), np.sin(angle)
    corners_x = np.array([0, width, 0, width], np.float64)
    corners_y = np.array([0, 0, height, height], np.float64)
    us = c * corners_x + s * corners_y + offset_u
    vs = -s * corners_x + c * corners_y + offset_v
    wave_amp = float(rng.uniform(0.2, 1.0))
    margin = 3 + int(np.ceil(wave_amp))
    i0 = int(np.floor(us.min() / pitch_u)) - margin
    i1 = int(np.ceil(us.max() / pitch_u)) + margin
    j0 = int(np.floor(vs.min() / pitch_v)) - margin
    j1 = int(np.ceil(vs.max() / pitch_v)) + margin
    n_u, n_v = i1 - i0, j1 - j0
    I, J = np.meshgrid(np.arange(i0, i1), np.arange(j0, j1), indexing="ij")

    # colours
    base = _random_color(rng)
    h, sat, val = colorsys.rgb_to_hsv(*base)
    knit_cols = None
    print_spec: dict = {}
    if knit:
        warp_up = np.ones((n_u, n_v), bool)
        rib = int(rng.choice([1, 2]))
        knit_cols = (np.arange(i0, i1) % (2 * rib)) < rib
        warp_color = _vary(rng, base, n_u, 0.02)
        weft_color = _vary(rng, base, n_v, 0.04)
    else:
        warp_up = _weave_pattern(texture, rng, I, J)
        if texture == "check":
            palette = np.stack([_random_color(rng, sat=(0.2, 0.9), val=(0.2, 0.95)) for _ in range(int(rng.integers(2, 5)))])
            widths = rng.integers(2, 12, size=len(palette))
            warp_color = _stripe_colors(rng, n_u, i0, palette, widths)
            if rng.uniform() < 0.6:
                weft_color = _stripe_colors(rng, n_v, j0, palette, widths)
            else:
                weft_color = _stripe_colors(rng, n_v, j0, palette, rng.integers(2, 12, size=len(palette)))
            warp_color = _vary(rng, np.ones(3, np.float32), n_u, 0.03) * warp_color
            weft_color = _vary(rng, np.ones(3, np.float32), n_v, 0.03) * weft_color
        elif texture == "herringbone":
            dark = _hsv(h, sat * 0.8, rng.uniform(0.15, 0.4))
            light = _hsv(h + rng.uniform(-0.05, 0.05), sat * 0.3, rng.uniform(0.65, 0.9))
            warp_color, weft_color = _vary(rng, dark, n_u, 0.04), _vary(rng, light, n_v, 0.04)
        elif texture == "jacquard":
            a = _hsv(h, sat, rng.uniform(0.3, 0.55))
            b = _hsv(h + rng.uniform(-0.08, 0.08), sat * rng.uniform(0.3, 1.0), rng.uniform(0.6, 0.9))
            warp_color, weft_color = _vary(rng, a, n_u, 0.02), _vary(rng, b, n_v, 0.02)
        elif texture == "print":
            ground = _hsv(h, rng.uniform(0.0, 0.2), rng.uniform(0.75, 0.95))
            warp_color, weft_color = _vary(rng, ground, n_u, 0.02), _vary(rng, ground, n_v, 0.02)
            print_spec = _sample_print(rng, h)
        else:
            if rng.uniform() < 0.3:  # contrasting weft (e.g. denim: dark warp, light weft)
                weft = _hsv(h + rng.uniform(-0.1, 0.1), sat * 0.3, rng.uniform(0.6, 0.9))
            else:
                weft = _hsv(h + rng.uniform(-0.03, 0.03), sat * rng.uniform(0.8, 1.1), val * rng.uniform(0.85, 1.1))
            warp_color, weft_color = _vary(rng, base, n_u, 0.04), _vary(rng, weft, n_v, 0.04)

    # yarn widths: per-yarn base, plus thickness that wanders along each yarn (slubs, twist)
    irregular = float(rng.uniform(0.03, 0.1))
    base_w = float(rng.uniform(0.72, 0.9)) if not knit else 1.0
    base_f = float(rng.uniform(0.72, 0.9)) if not knit else 1.0
    warp_width = base_w * (1 + rng.normal(0, 0.04, size=(n_u, 1))) * (
        1 + irregular * _smooth_along_v(rng.normal(0, 1.4, size=(n_u, n_v)))
    )
    weft_width = base_f * (1 + rng.normal(0, 0.04, size=(1, n_v))) * (
        1 + irregular * _smooth_along_v(rng.normal(0, 1.4, size=(n_v, n_u))).T
    )
    cell_gain = 1 + float(rng.uniform(0.02, 0.06)) * rng.normal(0, 1, size=(n_u, n_v))

    mean_color = 0.5 * (warp_color.mean(0) + weft_color.mean(0))
    gap_color = (mean_color * rng.uniform(0.25, 0.4)).astype(np.float32)
    # what a hole shows: a dark table (front light) or, less often, a bright back light
    hole_color = _hsv(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.02, 0.12) if rng.uniform() < 0.75 else rng.uniform(0.85, 1.0))
    lx, ly = rng.uniform(-0.5, 0.5), rng.uniform(-0.6, -0.1)  # light from above, slightly sideways
    light = np.array([lx, ly, 1.0], np.float32)
    light /= np.linalg.norm(light)

    shape = (height, width)
    wave_cells = float(rng.uniform(3, 8))
    wave_u = np.float32(wave_amp) * smooth_noise(rng, shape, wave_cells)
    wave_v = np.float32(wave_amp) * smooth_noise(rng, shape, wave_cells)
    g_amp = float(rng.uniform(0.05, 0.2))
    g_dir = float(rng.uniform(0, 2 * np.pi))
    # a linear illumination gradient, built from one row and one column (it is separable)
    gx = ((np.arange(width, dtype=np.float32) / max(width, 1) - 0.5) * np.float32(g_amp * np.cos(g_dir)))
    gy = ((np.arange(height, dtype=np.float32) / max(height, 1) - 0.5) * np.float32(g_amp * np.sin(g_dir)))
    exposure = np.float32(rng.uniform(0.9, 1.1))
    lighting = (exposure + exposure * (gy[:, None] + gx[None, :])) * (1 + np.float32(0.05) * smooth_noise(rng, shape, 2.5))
    sigma = float(rng.uniform(0.008, 0.022))
    pixel_noise = np.float32(sigma) * rng.standard_normal(shape, dtype=np.float32)

    return FabricParams(
        texture=texture, height=height, width=width, knit=knit, pitch_u=pitch_u, pitch_v=pitch_v,
        angle=angle, offset_u=offset_u, offset_v=offset_v, i0=i0, j0=j0,
        warp_up=np.ascontiguousarray(warp_up), warp_width=warp_width.astype(np.float32),
        weft_width=weft_width.astype(np.float32), warp_color=warp_color.astype(np.float32),
        weft_color=weft_color.astype(np.float32), cell_gain=cell_gain.astype(np.float32),
        gap_color=gap_color, hole_color=hole_color, light=light, wave_u=wave_u, wave_v=wave_v,
        lighting=lighting, pixel_noise=pixel_noise, knit_cols=knit_cols,
        print_spec=print_spec,
    )


def _sample_print(rng: np.random.Generator, hue: float) -> dict:
    kind = ["dots", "floral", "waves"][int(rng.integers(3))]
    inks = [_hsv(hue + rng.uniform(0.2, 0.8), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.7)) for _ in range(2)]
    return {
        "kind": kind,
        "period_u": float(rng.uniform(24, 60)),
        "period_v": float(rng.uniform(24, 60)),
        "size": float(rng.uniform(0.2, 0.35)),
        "petals": int(rng.integers(4, 8)),
        "stagger": bool(rng.uniform() < 0.7),
        "phase": float(rng.uniform(0, 2 * np.pi)),
        "inks": np.stack(inks),
        "strength": float(rng.uniform(0.75, 0.95)),
    }


def _print_layer(spec: dict, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ink coverage (H, W) in [0, 1] and ink index (H, W) of a repeating printed motif in fabric coords."""
    pu, pv = spec["period_u"], spec["period_v"]
    row = np.floor(v / pv)
    shift = np.where(row % 2 == 1, 0.5, 0.0) if spec["stagger"] else 0.0
    fu = (u / pu + shift) % 1.0 - 0.5
    fv = (v / pv) % 1.0 - 0.5
    ink = ((np.floor(u / pu + shift) + row) % 2).astype(np.int64)
    if spec["kind"] == "dots":
        r = np.hypot(fu, fv)
        cov = np.clip((spec["size"] - r) / 0.03, 0, 1)
    elif spec["kind"] == "floral":
        r = np.hypot(fu, fv)
        phi = np.arctan2(fv, fu)
        edge = spec["size"] * (0.65 + 0.35 * np.cos(spec["petals"] * phi))
        petals = np.clip((edge - r) / 0.03, 0, 1)
        centre = np.clip((0.07 - r) / 0.02, 0, 1)
        cov = np.maximum(petals, centre)
        ink = np.where(centre > 0.5, 1 - ink, ink)
    else:  # waves
        wave = np.sin(2 * np.pi * (u / pu) + spec["phase"]) * 0.25
        d = np.abs(((v / pv + wave) % 1.0) - 0.5)
        cov = np.clip((spec["size"] * 0.5 - d) / 0.03, 0, 1)
        ink = (np.floor(v / pv + wave) % 2).astype(np.int64)
    return cov.astype(np.float32), ink


def _ramp(t: np.ndarray, width: float) -> np.ndarray:
    """1 at t = 0 falling to 0 at t = width (squared): how deep a yarn dives near a crossing."""
    r = np.maximum(1.0 - t * (1.0 / width), 0.0)  # t >= 0 here, so r <= 1 already
    return r * r


CELL_ATTRIBUTES = ("warp_up", "warp_width", "weft_width", "gain", "warp_dip_top", "warp_dip_bottom",
                   "weft_dip_left", "weft_dip_right")


def cell_table(p: FabricParams) -> np.ndarray:
    """(n_u * n_v, len(CELL_ATTRIBUTES)) float32: every per-cell quantity, so that rendering gathers
    them with one `take` instead of one fancy-indexing pass each. For knits `warp_up` holds the
    knit (True) / purl (False) wale."""
    up = p.warp_up
    n_u, n_v = up.shape
    # a yarn dives under the crossing yarn at the ends of its float, not inside a long float
    warp_dip_top = ~up[:, np.r_[n_v - 1, 0 : n_v - 1]]
    warp_dip_bottom = ~up[:, np.r_[1:n_v, 0]]
    weft_dip_left = up[np.r_[n_u - 1, 0 : n_u - 1], :]
    weft_dip_right = up[np.r_[1:n_u, 0], :]
    first = np.broadcast_to(p.knit_cols[:, None], up.shape) if p.knit else up
    columns = [first, p.warp_width, p.weft_width, p.cell_gain, warp_dip_top, warp_dip_bottom, weft_dip_left,
               weft_dip_right]
    return np.ascontiguousarray(np.stack([np.asarray(c, np.float32).ravel() for c in columns], axis=1))


def render_geometry(p: FabricParams) -> dict:
    """Where every pixel lies on the yarn lattice (full frame): u, v (with meander), yarn indices
    i, j, position inside the cell fu, fv in [0, 1), the flat cell index, and the print layer."""
    yy, xx = pixel_grid(p.height, p.width)
    u, v = to_fabric_coords(p, xx, yy)
    u = u + p.wave_u
    v = v + p.wave_v
    uc = u / np.float32(p.pitch_u)
    vc = v / np.float32(p.pitch_v)
    fi = np.floor(uc)
    fj = np.floor(vc)
    i = fi.astype(np.int32)  # int32: half the memory traffic of int64 in the gathers below
    j = fj.astype(np.int32)
    geometry = {
        "u": u, "v": v, "i": i, "j": j,
        "fu": uc - fi, "fv": vc - fj,
        "cell": (i - p.i0) * p.warp_up.shape[1] + (j - p.j0),
    }
    if p.print_spec:
        geometry["print_cover"], geometry["print_ink"] = _print_layer(p.print_spec, u, v)
    return geometry


def _crop(a, window):
    if a is None or window is None:
        return a
    y0, y1, x0, x1 = window
    return a[y0:y1, x0:x1]


def render_structure(
    p: FabricParams,
    edits: YarnEdits | None = None,
    geometry: dict | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, dict]:
    """Render the yarns of `p` (with `edits`) -> (float32 (H, W, 3) RGB before lighting, fields).

    geometry: `render_geometry(p)` (or the fields of an earlier render), reused so that a re-render
    with edits computes exactly the same lattice; window: (y0, y1, x0, x1) renders only that part
    (the edits' arrays stay full-frame). fields: the geometry plus cover (H, W) in [0, 1], the
    height of the visible yarn surface (0 in gaps), and show_warp, whether a warp yarn (knit: a
    knit-wale stitch) is what this pixel shows; defects that follow the yarns use them.
    """
    g = geometry if geometry is not None else render_geometry(p)
    g = {k: _crop(g[k], window) for k in ("u", "v", "i", "j", "fu", "fv", "cell", "print_cover", "print_ink") if k in g}
    edits = edits or YarnEdits()
    warp_present = _crop(edits.warp_present, window)
    weft_present = _crop(edits.weft_present, window)
    attrs = dict(zip(CELL_ATTRIBUTES, np.moveaxis(np.take(p.cell_table, g["cell"], axis=0), -1, 0)))
    ii = g["i"] - p.i0
    jj = g["j"] - p.j0
    render = _render_knit if p.knit else _render_weave
    color_index, shade, cover, show_warp = render(p, attrs, ii, jj, g["fu"], g["fv"], warp_present, weft_present)
    gap = cover <= 0
    n_u, n_v = p.warp_up.shape
    # one colour table (warp yarns, weft yarns, gap, hole) so that colour is a single gather
    palette = np.concatenate([p.warp_color, p.weft_color, p.gap_color[None], p.hole_color[None]])
    gap_index = n_u + n_v
    if edits.hole is not None:
        gap_index = np.where(_crop(edits.hole, window), n_u + n_v + 1, n_u + n_v)
    color_index = np.where(gap, gap_index, color_index)
    rgb = np.take(palette, color_index, axis=0) * np.where(gap, np.float32(1), shade)[..., None]
    if "print_cover" in g:
        # ink sits on the yarn surface, less of it reaches down into the gaps
        alpha = np.float32(p.print_spec["strength"]) * g["print_cover"] * np.where(gap, np.float32(0.3), np.float32(1))
        if edits.hole is not None:  # no ink on what shows through a hole
            alpha = np.where(gap & _crop(edits.hole, window), np.float32(0), alpha)
        ink_rgb = np.take(p.print_spec["inks"], g["print_ink"], axis=0)
        # the ink takes the yarn's shading: scale by this pixel's brightness relative to the ground
        shade = (rgb[..., 0] + rgb[..., 1] + rgb[..., 2]) * np.float32(1 / (3 * np.mean(p.warp_color) + 3e-3))
        rgb = rgb + (ink_rgb * shade[..., None] - rgb) * alpha[..., None]
    if edits.recess is not None:
        rgb = rgb * _crop(edits.recess, window)[..., None]
    fields = dict(g, cover=cover, show_warp=show_warp)
    return rgb.astype(np.float32, copy=False), fields


def lambert(p: FabricParams, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray) -> np.ndarray:
    lx, ly, lz = (np.float32(c) for c in p.light)
    return np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)


def _cylinder(d: np.ndarray) -> np.ndarray:
    """Height of a round yarn at normalised distance d from its axis (0 outside |d| < 1)."""
    return np.sqrt(np.maximum(1 - d * d, 0))


def _render_weave(p, attrs, ii, jj, fu, fv, warp_present, weft_present):
    warp_up = attrs["warp_up"] > 0.5
    du = (fu - 0.5) / (0.5 * attrs["warp_width"])
    dv = (fv - 0.5) / (0.5 * attrs["weft_width"])
    warp_cover = np.abs(du) < 1
    weft_cover = np.abs(dv) < 1
    if warp_present is not None:
        warp_cover &= warp_present
    if weft_present is not None:
        weft_cover &= weft_present
    warp_z = _cylinder(du)
    weft_z = _cylinder(dv)
    warp_along = 1 - 0.45 * (attrs["warp_dip_top"] * _ramp(fv, 0.45) + attrs["warp_dip_bottom"] * _ramp(1 - fv, 0.45))
    weft_along = 1 - 0.45 * (attrs["weft_dip_left"] * _ramp(fu, 0.45) + attrs["weft_dip_right"] * _ramp(1 - fu, 0.45))
    if warp_present is not None:  # no warp to dive under: the weft floats flat across the gap
        weft_along = np.where(warp_present, weft_along, np.float32(1.0))
    if weft_present is not None:
        warp_along = np.where(weft_present, warp_along, np.float32(1.0))
    # surface normals tilt across the yarn (cylinder) and along it where it dives
    warp_shade = lambert(p, du * warp_z * 0.9, (1 - warp_along) * np.sign(fv - 0.5) * 1.5, warp_z) * warp_along
    weft_shade = lambert(p, (1 - weft_along) * np.sign(fu - 0.5) * 1.5, dv * weft_z * 0.9, weft_z) * weft_along

    show_warp = np.where(warp_up, warp_cover, warp_cover & ~weft_cover)
    show_weft = np.where(warp_up, weft_cover & ~warp_cover, weft_cover)
    # a yarn seen beneath a gap of the other system lies deeper, in shadow
    depth_warp = np.where(warp_up, np.float32(1.0), np.float32(0.7))
    shade = np.where(show_warp, warp_shade * depth_warp, weft_shade * (1.7 - depth_warp)) * attrs["gain"]
    color_index = np.where(show_warp, ii, p.warp_up.shape[0] + jj)
    cover = np.where(show_warp, warp_z * warp_along, np.where(show_weft, weft_z * weft_along, np.float32(0)))
    return color_index, shade, cover, show_warp


def _render_knit(p, attrs, ii, jj, fu, fv, warp_present, weft_present):
    """Rib knit: knit wales show V stitches (two slanted legs), purl wales show recessed loop heads.

    A missing wale (broken end / dropped stitch) leaves a ladder of horizontal rungs; a missing
    course leaves the legs of the loops above pulled straight down.
    """
    thick = attrs["warp_width"] * 0.25
    knit_col = attrs["warp_up"] > 0.5
    t = fv
    xl = 0.5 - 0.26 * (1 - t) - 0.02
    xr = 0.5 + 0.26 * (1 - t) + 0.02
    dl = (fu - xl) / thick
    dr = (fu - xr) / thick
    zl = _cylinder(dl)
    zr = _cylinder(dr)
    along = 1 - 0.4 * _ramp(t, 0.3) - 0.25 * _ramp(1 - t, 0.25)
    left_wins = zl >= zr
    z_knit = np.where(left_wins, zl, zr)
    nx_knit = np.where(left_wins, dl * zl, dr * zr) * 0.9
    knit_shade = lambert(p, nx_knit, -0.3 * (1 - along), z_knit) * along

    dv = (fv - 0.5) / (0.5 * attrs["weft_width"] * 0.75)
    z_purl = _cylinder(dv)
    purl_along = 1 - 0.35 * (_ramp(fu, 0.3) + _ramp(1 - fu, 0.3))
    purl_shade = lambert(p, np.zeros_like(dv), dv * z_purl * 0.9, z_purl) * purl_along * 0.7

    z = np.where(knit_col, z_knit, z_purl * purl_along)
    shade = np.where(knit_col, knit_shade, purl_shade)
    missing_wale = None if warp_present is None else ~warp_present
    missing_course = None if weft_present is None else ~weft_present
    if missing_wale is not None:
        rung_d = (fv - 0.5) / 0.14
        rung_z = _cylinder(rung_d)
        z = np.where(missing_wale, rung_z, z)
        shade = np.where(missing_wale, lambert(p, np.zeros_like(rung_d), rung_d * rung_z, rung_z) * 0.8, shade)
    if missing_course is not None:
        leg_d = np.minimum(np.abs(fu - 0.3), np.abs(fu - 0.7)) / 0.1
        leg_z = _cylinder(leg_d)
        both = missing_course if missing_wale is None else missing_course & ~missing_wale
        z = np.where(both, leg_z, z)
        shade = np.where(both, leg_z * 0.75, shade)
    if missing_wale is not None and missing_course is not None:
        z = np.where(missing_wale & missing_course, 0.0, z)
    cover = (z > 0.05).astype(np.float32) * z
    return p.warp_up.shape[0] + jj, shade * attrs["gain"], cover, knit_col & (cover > 0)
