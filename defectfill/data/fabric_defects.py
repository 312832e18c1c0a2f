"""Fabric defects rendered in the fabric's own structure.

Each defect is planned from the good fabric (its parameters and rendered fields) and a seeded
generator, as a `DefectPlan`: structural `YarnEdits` (a warp yarn missing over a segment, a torn
hole) that the texture renderer draws into the weave, and/or an `effect` applied to the rendered
colours before lighting (a stain tints the yarns, oil darkens and wicks along them, a white
stripe bleaches a yarn band, a knot adds a shaded lump). The exact mask is computed afterwards by
the caller as the pixels that differ from the good rendering.

Sizes are given for 256-px images and scale with the image side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from defectfill.data.fabric_textures import FabricParams, YarnEdits, lambert, pixel_grid, to_fabric_coords

DEFECT_TYPES: tuple[str, ...] = ("stain", "oil", "knot", "broken_end", "broken_yarn", "white_stripe", "hole")

Effect = Callable[[np.ndarray, dict], np.ndarray]


@dataclass
class DefectPlan:
    """What to change: yarn edits for the renderer, and/or a colour `effect` on its output.

    effect(rgb, fields) takes and returns the (h, w, 3) float RGB of `window` (y0, y1, x0, x1), with
    `fields` cropped to it; nothing outside the window changes.
    """

    defect_type: str
    edits: YarnEdits | None = None
    effect: Effect | None = None
    window: tuple[int, int, int, int] | None = None


def _scale(p: FabricParams) -> float:
    return min(p.height, p.width) / 256.0


def _centre(p: FabricParams, rng: np.random.Generator, margin: float) -> tuple[float, float]:
    mx = min(margin, p.width / 2 - 1)
    my = min(margin, p.height / 2 - 1)
    return float(rng.uniform(mx, p.width - mx)), float(rng.uniform(my, p.height - my))


def _window(p: FabricParams, cx: float, cy: float, half: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the square of half-side `half` around (cx, cy), clipped to the image."""
    return (
        max(0, int(np.floor(cy - half))), min(p.height, int(np.ceil(cy + half)) + 1),
        max(0, int(np.floor(cx - half))), min(p.width, int(np.ceil(cx + half)) + 1),
    )


def _local_grid(p: FabricParams, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = window
    yy, xx = pixel_grid(p.height, p.width)
    return yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]


def _crop(a: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = window
    return a[y0:y1, x0:x1]


# the smallest colour change a defect effect makes; weaker fringes are cut so the mask ends where
# the defect visibly ends
_VISIBLE = np.float32(0.04)

# r(phi) of a blob is at most 1 + roughness * 1.6 * (1/2 + 1/3 + 1/5) times its radius
_MAX_EDGE = 1.0 + 1.6 * (1 / 2 + 1 / 3 + 1 / 5) * 0.3


def _blob_radius(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cx: float, cy: float, radius: float,
                 roughness: float = 0.25, elongation: float = 1.0) -> np.ndarray:
    """Normalised distance to an irregular blob over the grid (yy, xx) (< 1 inside): an ellipse whose
    radius r(phi) carries a few random harmonics."""
    dx = xx - np.float32(cx)
    dy = yy - np.float32(cy)
    rot = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    a = (c * dx + s * dy) / np.float32(elongation)
    b = -s * dx + c * dy
    phi = np.arctan2(b, a)
    edge = np.ones_like(phi)
    for k in (2, 3, 5):
        edge += np.float32(roughness / k * 1.6 * rng.uniform(-1, 1)) * np.cos(k * phi + np.float32(rng.uniform(0, 2 * np.pi)))
    return np.hypot(a, b) / (np.float32(radius) * np.maximum(edge, np.float32(0.35)))


def _curve_height(xx: np.ndarray, yy: np.ndarray, x0: float, y0: float, angle: float, length: float,
                  bend: float, half_width: float) -> np.ndarray:
    """Height (0..1, round cross-section) of a loose yarn: a bent curve of `length` px leaving
    (x0, y0) at `angle`, turning by `bend` radians along its length."""
    t = np.linspace(0, 1, 16, dtype=np.float32)
    px = (x0 + np.cos(angle + bend * t) * length * t).astype(np.float32)
    py = (y0 + np.sin(angle + bend * t) * length * t).astype(np.float32)
    d = np.min(np.hypot(xx[..., None] - px, yy[..., None] - py), axis=-1)
    return np.sqrt(np.maximum(1 - (d / np.float32(half_width)) ** 2, 0))


def _far_color(rng: np.random.Generator, fabric_rgb: np.ndarray, palette: np.ndarray, tries: int = 3) -> np.ndarray:
    """The palette colour, among a few random picks, farthest from the fabric (so the defect shows)."""
    picks = palette[rng.choice(len(palette), size=tries, replace=False)]
    # brightness counts double: the stain must also show on a monochrome (line-scan) camera
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    score = np.abs(picks - fabric_rgb[None]).sum(1) + 2 * np.abs((picks - fabric_rgb[None]) @ luma)
    return picks[np.argmax(score)]


_STAIN_COLORS = np.array(
    [
        [0.45, 0.28, 0.12],  # coffee
        [0.55, 0.08, 0.15],  # red wine
        [0.70, 0.36, 0.10],  # rust
        [0.15, 0.20, 0.55],  # ink
        [0.30, 0.45, 0.12],  # grass
        [0.85, 0.72, 0.25],  # yellow dye
        [0.92, 0.90, 0.85],  # pale (on dark fabric)
    ],
    np.float32,
)


def _fabric_mean(p: FabricParams) -> np.ndarray:
    return 0.5 * (p.warp_color.mean(0) + p.weft_color.mean(0))


def plan_stain(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """A colour spot: the yarns take up a foreign dye, most in the yarns, with a darker tide mark."""
    s = _scale(p)
    radius = max(3.0, rng.uniform(6, 24) * s)
    elongation = rng.uniform(1.0, 1.8)
    cx, cy = _centre(p, rng, radius * 1.4 + 2)
    window = _window(p, cx, cy, radius * elongation * _MAX_EDGE + 2)
    yy, xx = _local_grid(p, window)
    rr = _blob_radius(rng, yy, xx, cx, cy, radius, roughness=0.3, elongation=elongation)
    tint = _far_color(rng, _fabric_mean(p), _STAIN_COLORS)
    strength = np.float32(rng.uniform(0.5, 0.85))
    # a tide mark: dye carried to the rim of the drop as it dries
    rim = np.exp(-(((rr - 0.9) / 0.1) ** 2))

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        inside = np.clip((1.0 - rr) / 0.2, 0.0, 1.0)
        amount = strength * np.clip(0.75 * inside + 0.35 * rim * (rr < 1), 0, 1)
        amount = amount * (0.6 + 0.4 * f["cover"])  # yarns soak up more dye than the gaps
        amount = np.where(amount < _VISIBLE, np.float32(0), amount)  # a crisp edge, no invisible fringe
        target = tint * (0.45 + 0.55 * f["cover"])[..., None]
        return rgb * (1 - amount[..., None]) + target * amount[..., None]

    return DefectPlan("stain", effect=effect, window=window)


def plan_oil(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """An oil stain: darkens (and yellows) the fabric and wicks outwards along single yarns."""
    s = _scale(p)
    radius = max(3.0, rng.uniform(6, 20) * s)
    cx, cy = _centre(p, rng, radius * 2.0 + 2)
    window = _window(p, cx, cy, radius * 2.1 + 2)
    yy, xx = _local_grid(p, window)
    uc, vc = to_fabric_coords(p, cx, cy)
    core = _blob_radius(rng, yy, xx, cx, cy, radius, roughness=0.2)
    f = {k: _crop(fields[k], window) for k in ("u", "v", "i", "j", "cover", "show_warp")}
    du = f["u"] - np.float32(uc)
    dv = f["v"] - np.float32(vc)
    # oil wicks along the yarns: each yarn carries it its own distance beyond the core
    i_min, j_min = int(f["i"].min()), int(f["j"].min())
    reach_warp = 1.0 + rng.uniform(0.2, 1.0, size=int(f["i"].max()) - i_min + 1).astype(np.float32)
    reach_weft = 1.0 + rng.uniform(0.2, 1.0, size=int(f["j"].max()) - j_min + 1).astype(np.float32)
    r = np.float32(radius)
    along_warp = np.hypot(du / (r * 0.9), dv / (r * reach_warp[f["i"] - i_min]))
    along_weft = np.hypot(du / (r * reach_weft[f["j"] - j_min]), dv / (r * 0.9))
    on_yarn = f["cover"] > 0
    rr = np.minimum(core, np.where(on_yarn, np.where(f["show_warp"], along_warp, along_weft), core))
    strength = np.float32(rng.uniform(0.4, 0.65))
    stain_tone = np.array([1.0, 0.95, 0.8], np.float32)  # mineral oil yellows as it darkens

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        amount = strength * np.clip((1.0 - rr) / 0.35, 0.0, 1.0) * (0.7 + 0.3 * f["cover"])
        amount = np.where(amount < _VISIBLE, np.float32(0), amount)
        a = amount[..., None]
        return rgb * (1 - a) * (1 - a * (1 - stain_tone))

    return DefectPlan("oil", effect=effect, window=window)


def plan_knot(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """A knot / slub: a small raised lump of tangled yarn, lit from the fabric's light, casting a
    shadow, with one or two loose yarn ends."""
    s = _scale(p)
    radius = max(2.5, rng.uniform(4, 9) * s)
    elongation = rng.uniform(1.0, 1.6)
    tail_max = 14 * max(s, 0.5)
    cx, cy = _centre(p, rng, radius * 3 + 2)
    window = _window(p, cx, cy, radius * elongation * 1.3 + tail_max + radius + 3)
    yy, xx = _local_grid(p, window)
    rr = _blob_radius(rng, yy, xx, cx, cy, radius, roughness=0.15, elongation=elongation)
    # shadow: the lump seen from the light, shifted away from it
    sx, sy = -p.light[0] / p.light[2] * radius * 0.6, -p.light[1] / p.light[2] * radius * 0.6
    shadow_rr = np.hypot(xx - np.float32(cx + sx), yy - np.float32(cy + sy)) / np.float32(radius * 1.05)
    # loose yarn ends leaving the knot
    tails = np.zeros(yy.shape, np.float32)
    for _ in range(int(rng.integers(1, 3))):
        ang = rng.uniform(0, 2 * np.pi)
        x0, y0 = cx + np.cos(ang) * radius * 0.8, cy + np.sin(ang) * radius * 0.8
        length = rng.uniform(5 / 14, 1.0) * tail_max
        tails = np.maximum(tails, _curve_height(xx, yy, x0, y0, ang, length, rng.uniform(-0.6, 0.6), 1.1))
    yarn = p.warp_color.mean(0) if rng.uniform() < 0.5 else p.weft_color.mean(0)
    twist_angle = rng.uniform(0, np.pi)
    across = xx * np.float32(np.cos(twist_angle)) + yy * np.float32(np.sin(twist_angle))
    along = yy * np.float32(np.cos(twist_angle)) - xx * np.float32(np.sin(twist_angle))
    # fibres wound round the lump: stripes that swirl rather than run parallel
    twist = 0.78 + 0.22 * np.sin(np.float32(2 * np.pi / 1.7) * across + 3 * rr + 1.5 * np.sin(along * np.float32(0.8)))

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        z = np.sqrt(np.maximum(1 - rr * rr, 0))
        nx = (xx - np.float32(cx)) / np.float32(radius * 1.2)
        ny = (yy - np.float32(cy)) / np.float32(radius * 1.2)
        shade = (0.25 + 0.95 * lambert(p, nx, ny, z + 0.1)) * twist
        lump = yarn * shade[..., None]
        out = rgb * np.where((shadow_rr < 1) & (rr >= 1), np.float32(0.6), np.float32(1.0))[..., None]
        out = np.where((tails > 0)[..., None], yarn * (0.5 + 0.6 * tails)[..., None], out)
        return np.where((rr < 1)[..., None], lump, out)

    return DefectPlan("knot", effect=effect, window=window)


def _to_pixel(p: FabricParams, u: float, v: float) -> tuple[float, float]:
    """Lattice (u, v) -> pixel (x, y), the inverse of `to_fabric_coords` (meander ignored)."""
    c, s = np.cos(p.angle), np.sin(p.angle)
    du, dv = u - p.offset_u, v - p.offset_v
    return float(c * du - s * dv), float(s * du + c * dv)


def _missing_yarns(p: FabricParams, rng: np.random.Generator, fields: dict, along_warp: bool):
    """1-2 neighbouring yarns of one system missing over a 30-200 px segment.

    Returns the (H, W) bool mask of missing yarn cells, the pixel (x, y) of the two broken ends,
    the yarn direction (radians, pointing from the first end to the second) and the yarn's colour.
    """
    s = _scale(p)
    extent = p.height if along_warp else p.width
    length = float(np.clip(rng.uniform(30, 200) * s, 12, 0.95 * extent))
    cx, cy = _centre(p, rng, 8)
    if along_warp:
        cy = float(rng.uniform(length / 2, p.height - length / 2))
    else:
        cx = float(rng.uniform(length / 2, p.width - length / 2))
    uc, vc = to_fabric_coords(p, cx, cy)
    count = 1 if rng.uniform() < 0.75 else 2
    if along_warp:
        first = int(np.floor(uc / p.pitch_u))
        yarn, pos, centre = fields["i"], fields["v"], vc
        mid = (first + count / 2) * p.pitch_u
        ends = [_to_pixel(p, mid, vc - length / 2), _to_pixel(p, mid, vc + length / 2)]
        color = p.warp_color[first - p.i0]
    else:
        first = int(np.floor(vc / p.pitch_v))
        yarn, pos, centre = fields["j"], fields["u"], uc
        mid = (first + count / 2) * p.pitch_v
        ends = [_to_pixel(p, uc - length / 2, mid), _to_pixel(p, uc + length / 2, mid)]
        color = p.weft_color[first - p.j0]
    missing = (yarn >= first) & (yarn < first + count) & (np.abs(pos - np.float32(centre)) < np.float32(length / 2))
    direction = float(np.arctan2(ends[1][1] - ends[0][1], ends[1][0] - ends[0][0]))
    return missing, ends, direction, color


def _plan_broken(p: FabricParams, rng: np.random.Generator, fields: dict, along_warp: bool) -> DefectPlan:
    """A yarn missing over a segment; the crossing yarns float over the empty lane, which lies in
    shadow; the broken ends hang loose into the lane as short bent yarn tails."""
    missing, ends, direction, color = _missing_yarns(p, rng, fields, along_warp)
    pitch = p.pitch_u if along_warp else p.pitch_v
    recess = np.where(missing, np.float32(rng.uniform(0.6, 0.78)), np.float32(1.0))
    tails = []
    for k, (x0, y0) in enumerate(ends):
        if rng.uniform() < 0.7:
            # the loose end points back into the lane it left, bent at random
            angle = direction + (0.0 if k == 0 else np.pi) + rng.uniform(-0.7, 0.7)
            tails.append((x0, y0, angle, rng.uniform(4, 12) * max(_scale(p), 0.5), rng.uniform(-1.0, 1.0)))
    half_width = max(0.9, 0.3 * pitch)
    edits = YarnEdits(warp_present=~missing, recess=recess) if along_warp else YarnEdits(weft_present=~missing, recess=recess)
    if not tails:
        return DefectPlan("broken_end" if along_warp else "broken_yarn", edits=edits)
    reach = max(t[3] for t in tails) + half_width + 2
    xs = [t[0] for t in tails]
    ys = [t[1] for t in tails]
    window = (
        max(0, int(np.floor(min(ys) - reach))), min(p.height, int(np.ceil(max(ys) + reach)) + 1),
        max(0, int(np.floor(min(xs) - reach))), min(p.width, int(np.ceil(max(xs) + reach)) + 1),
    )
    if window[0] >= window[1] or window[2] >= window[3]:
        return DefectPlan("broken_end" if along_warp else "broken_yarn", edits=edits)

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        height = np.zeros(f["x"].shape, np.float32)
        for x0, y0, angle, length, bend in tails:
            height = np.maximum(height, _curve_height(f["x"], f["y"], x0, y0, angle, length, bend, half_width))
        shade = (0.45 + 0.55 * height)[..., None]
        return np.where((height > 0)[..., None], color * shade, rgb)

    return DefectPlan("broken_end" if along_warp else "broken_yarn", edits=edits, effect=effect, window=window)


def plan_broken_end(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """A broken end: a warp (vertical) yarn missing over a segment, loose ends in the lane."""
    return _plan_broken(p, rng, fields, along_warp=True)


def plan_broken_yarn(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """A broken pick: a weft (horizontal) yarn missing over a segment, loose ends in the lane."""
    return _plan_broken(p, rng, fields, along_warp=False)


def plan_white_stripe(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """A white stripe: one or two yarns bleached along their length (crossing yarns in the band less)."""
    s = _scale(p)
    along_warp = rng.uniform() < 0.5
    extent = p.height if along_warp else p.width
    length = float(extent * 1.5 if rng.uniform() < 0.3 else np.clip(rng.uniform(40, 200) * s, 16, 0.95 * extent))
    cx, cy = _centre(p, rng, 8)
    if along_warp:
        cy = float(rng.uniform(length / 2, p.height - length / 2)) if length < p.height else p.height / 2
    else:
        cx = float(rng.uniform(length / 2, p.width - length / 2)) if length < p.width else p.width / 2
    uc, vc = to_fabric_coords(p, cx, cy)
    count = 1 if rng.uniform() < 0.7 else 2
    if along_warp:
        first = int(np.floor(uc / p.pitch_u))
        band = (fields["i"] >= first) & (fields["i"] < first + count)
        pos, centre = fields["v"], vc
    else:
        first = int(np.floor(vc / p.pitch_v))
        band = (fields["j"] >= first) & (fields["j"] < first + count)
        pos, centre = fields["u"], uc
    band &= np.abs(pos - np.float32(centre)) < np.float32(length / 2)
    rows = np.flatnonzero(band.any(axis=1))
    cols = np.flatnonzero(band.any(axis=0))
    if rows.size == 0:
        return DefectPlan("white_stripe")  # off the image: the caller draws again
    window = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    band = _crop(band, window)
    taper = np.clip((np.float32(length / 2) - np.abs(_crop(pos, window) - np.float32(centre))) / 8.0, 0.0, 1.0)
    strength = np.float32(rng.uniform(0.45, 0.75))
    white = np.array([0.95, 0.95, 0.92], np.float32)

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        # the bleached yarn itself loses most colour; crossing yarns in the band take less
        own = f["show_warp"] if along_warp else ~f["show_warp"]
        amount = strength * taper * band * np.where(own, np.float32(1.0), np.float32(0.6))
        target = white * (0.4 + 0.6 * f["cover"])[..., None]
        a = amount[..., None]
        return rgb * (1 - a) + target * a

    return DefectPlan("white_stripe", effect=effect, window=window)


def plan_hole(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    """A hole: warp and weft torn over a blob, each cut yarn ending at its own length (ragged
    edges with yarn ends), the backing showing through, the fabric around it puckered."""
    s = _scale(p)
    radius = max(3.0, rng.uniform(4, 16) * s)
    elongation = rng.uniform(1.0, 1.7)
    cx, cy = _centre(p, rng, radius * 2 + 2)
    window = _window(p, cx, cy, radius * elongation * _MAX_EDGE * 1.7 + 2)
    yy, xx = _local_grid(p, window)
    core = _blob_radius(rng, yy, xx, cx, cy, radius, roughness=0.3, elongation=elongation)
    f = {k: _crop(fields[k], window) for k in ("i", "j")}
    # torn edges: every cut yarn sees the hole at its own scale, so some yarn ends stick into the
    # hole and others are torn back from its edge
    i_min, j_min = int(f["i"].min()), int(f["j"].min())
    jag_warp = rng.uniform(-0.25, 0.55, size=int(f["i"].max()) - i_min + 1).astype(np.float32)
    jag_weft = rng.uniform(-0.25, 0.55, size=int(f["j"].max()) - j_min + 1).astype(np.float32)
    warp_gone = core * (1 + jag_warp[f["i"] - i_min]) < 1
    weft_gone = core * (1 + jag_weft[f["j"] - j_min]) < 1
    warp_gone |= core < 0.6
    weft_gone |= core < 0.6
    # the fabric around a hole is pulled and puckered, catching less light
    recess = np.where((core >= 0.6) & (core < 1.5), np.float32(0.88), np.float32(1.0))

    def full(local: np.ndarray, fill) -> np.ndarray:
        out = np.full((p.height, p.width), fill, local.dtype)
        y0, y1, x0, x1 = window
        out[y0:y1, x0:x1] = local
        return out

    edits = YarnEdits(warp_present=full(~warp_gone, True), weft_present=full(~weft_gone, True),
                      hole=full(core < 1.7, False), recess=full(recess, np.float32(1.0)))
    return DefectPlan("hole", edits=edits)


PLANNERS: dict[str, Callable[[FabricParams, np.random.Generator, dict], DefectPlan]] = {
    "stain": plan_stain,
    "oil": plan_oil,
    "knot": plan_knot,
    "broken_end": plan_broken_end,
    "broken_yarn": plan_broken_yarn,
    "white_stripe": plan_white_stripe,
    "hole": plan_hole,
}
assert tuple(PLANNERS) == DEFECT_TYPES
