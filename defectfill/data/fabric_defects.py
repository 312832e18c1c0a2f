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

from defectfill.data.fabric_textures import FabricParams, YarnEdits, _lambert, _pixel_grid, to_fabric_coords

DEFECT_TYPES: tuple[str, ...] = ("stain", "oil", "knot", "broken_end", "broken_yarn", "white_stripe", "hole")

Effect = Callable[[np.ndarray, dict], np.ndarray]


@dataclass
class DefectPlan:
    """What to change: yarn edits for the renderer and/or a colour effect on its output."""

    defect_type: str
    edits: YarnEdits | None = None
    effect: Effect | None = None


def _scale(p: FabricParams) -> float:
    return min(p.height, p.width) / 256.0


def _centre(p: FabricParams, rng: np.random.Generator, margin: float) -> tuple[float, float]:
    mx = min(margin, p.width / 2 - 1)
    my = min(margin, p.height / 2 - 1)
    return float(rng.uniform(mx, p.width - mx)), float(rng.uniform(my, p.height - my))


def _blob_radius(p: FabricParams, rng: np.random.Generator, cx: float, cy: float, radius: float,
                 roughness: float = 0.25, elongation: float = 1.0) -> np.ndarray:
    """(H, W) normalised distance to an irregular blob (< 1 inside): a few random harmonics on r(phi)."""
    yy, xx = _pixel_grid(p.height, p.width)
    dx = xx - cx
    dy = yy - cy
    rot = rng.uniform(0, np.pi)
    c, s = np.cos(rot), np.sin(rot)
    a = (c * dx + s * dy) / elongation
    b = -s * dx + c * dy
    phi = np.arctan2(b, a)
    edge = np.ones_like(phi)
    for k in (2, 3, 5):
        edge += roughness / k * 1.6 * rng.uniform(-1, 1) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    return np.hypot(a, b) / (radius * np.maximum(edge, 0.35))


def _far_color(rng: np.random.Generator, fabric_rgb: np.ndarray, palette: np.ndarray, tries: int = 3) -> np.ndarray:
    """The palette colour, among a few random picks, farthest from the fabric (so the defect shows)."""
    picks = palette[rng.choice(len(palette), size=tries, replace=False)]
    return picks[np.argmax(np.abs(picks - fabric_rgb[None]).sum(1))]


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
    s = _scale(p)
    radius = max(3.0, rng.uniform(6, 24) * s)
    cx, cy = _centre(p, rng, radius * 1.4 + 2)
    rr = _blob_radius(p, rng, cx, cy, radius, roughness=0.3, elongation=rng.uniform(1.0, 1.8))
    tint = _far_color(rng, _fabric_mean(p), _STAIN_COLORS)
    strength = rng.uniform(0.5, 0.85)
    # a tide mark: dye carried to the rim of the drop as it dries
    rim = np.exp(-(((rr - 0.9) / 0.1) ** 2))

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        inside = np.clip((1.0 - rr) / 0.2, 0.0, 1.0)
        amount = strength * np.clip(0.75 * inside + 0.35 * rim * (rr < 1), 0, 1)
        amount = amount * (0.6 + 0.4 * f["cover"])  # yarns soak up more dye than the gaps
        target = tint[None, None, :] * (0.45 + 0.55 * f["cover"])[..., None]
        return rgb * (1 - amount[..., None]) + target * amount[..., None]

    return DefectPlan("stain", effect=effect)


def plan_oil(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    s = _scale(p)
    radius = max(3.0, rng.uniform(6, 20) * s)
    cx, cy = _centre(p, rng, radius * 2.0 + 2)
    uc, vc = to_fabric_coords(p, cx, cy)
    core = _blob_radius(p, rng, cx, cy, radius, roughness=0.2)
    du = fields["u"] - uc
    dv = fields["v"] - vc
    # oil wicks along the yarns: each yarn carries it a random distance beyond the core
    n_i = int(fields["i"].max() - fields["i"].min() + 1)
    n_j = int(fields["j"].max() - fields["j"].min() + 1)
    reach_warp = 1.0 + rng.uniform(0.2, 1.0, size=n_i).astype(np.float32)
    reach_weft = 1.0 + rng.uniform(0.2, 1.0, size=n_j).astype(np.float32)
    along_warp = np.hypot(du / (radius * 0.9), dv / (radius * reach_warp[fields["i"] - fields["i"].min()]))
    along_weft = np.hypot(du / (radius * reach_weft[fields["j"] - fields["j"].min()]), dv / (radius * 0.9))
    on_yarn = fields["cover"] > 0
    rr = np.minimum(core, np.where(on_yarn, np.where(fields["show_warp"], along_warp, along_weft), core))
    strength = rng.uniform(0.4, 0.65)
    stain_tone = np.array([1.0, 0.95, 0.8], np.float32)  # mineral oil yellows as it darkens

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        amount = strength * np.clip((1.0 - rr) / 0.35, 0.0, 1.0) * (0.7 + 0.3 * f["cover"])
        a = amount[..., None]
        return rgb * (1 - a) * (1 - a * (1 - stain_tone))

    return DefectPlan("oil", effect=effect)


def plan_knot(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    s = _scale(p)
    radius = max(2.5, rng.uniform(4, 9) * s)
    cx, cy = _centre(p, rng, radius * 3 + 2)
    rr = _blob_radius(p, rng, cx, cy, radius, roughness=0.15, elongation=rng.uniform(1.0, 1.6))
    yy, xx = _pixel_grid(p.height, p.width)
    # shadow: the lump seen from the light, shifted away from it
    sx, sy = -p.light[0] / p.light[2] * radius * 0.6, -p.light[1] / p.light[2] * radius * 0.6
    shadow_rr = np.hypot(xx - cx - sx, yy - cy - sy) / (radius * 1.05)
    # loose yarn ends leaving the knot
    tails = np.zeros((p.height, p.width), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(5, 14) * max(s, 0.5)
        bend = rng.uniform(-0.6, 0.6)
        t = np.linspace(0, 1, 16, dtype=np.float32)
        px = cx + np.cos(ang) * radius * 0.8 + np.cos(ang + bend * t) * length * t
        py = cy + np.sin(ang) * radius * 0.8 + np.sin(ang + bend * t) * length * t
        d = np.min(np.hypot(xx[..., None] - px, yy[..., None] - py), axis=-1)
        tails = np.maximum(tails, np.sqrt(np.clip(1 - (d / 1.1) ** 2, 0, 1)))
    yarn = p.warp_color.mean(0) if rng.uniform() < 0.5 else p.weft_color.mean(0)
    twist_angle = rng.uniform(0, np.pi)
    twist = 0.8 + 0.2 * np.sin(2 * np.pi * (xx * np.cos(twist_angle) + yy * np.sin(twist_angle)) / 1.7 + 3 * rr)

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        z = np.sqrt(np.clip(1 - rr * rr, 0, 1))
        nx = (xx - cx) / (radius * 1.2)
        ny = (yy - cy) / (radius * 1.2)
        shade = (0.25 + 0.95 * _lambert(p, nx, ny, z + 0.1)) * twist
        lump = yarn[None, None, :] * shade[..., None]
        out = rgb * np.where((shadow_rr < 1) & (rr >= 1), 0.6, 1.0)[..., None]
        out = np.where((tails > 0)[..., None], yarn * (0.5 + 0.6 * tails)[..., None], out)
        return np.where((rr < 1)[..., None], lump, out)

    return DefectPlan("knot", effect=effect)


def _missing_yarns(p: FabricParams, rng: np.random.Generator, fields: dict, along_warp: bool) -> np.ndarray:
    """(H, W) bool: 1-2 neighbouring yarns of one system missing over a 30-200 px segment."""
    s = _scale(p)
    extent = p.height if along_warp else p.width
    length = float(np.clip(rng.uniform(30, 200) * s, 12, 0.95 * extent))
    cx, cy = _centre(p, rng, length / 2 if along_warp else 8)
    if not along_warp:
        cx, cy = _centre(p, rng, 8)
        cx = float(rng.uniform(length / 2, p.width - length / 2)) if length < p.width else p.width / 2
    uc, vc = to_fabric_coords(p, cx, cy)
    count = 1 if rng.uniform() < 0.75 else 2
    if along_warp:
        first = int(np.floor(uc / p.pitch_u))
        yarn, pos = fields["i"], fields["v"]
        centre = vc
    else:
        first = int(np.floor(vc / p.pitch_v))
        yarn, pos = fields["j"], fields["u"]
        centre = uc
    return (yarn >= first) & (yarn < first + count) & (np.abs(pos - centre) < length / 2)


def plan_broken_end(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    missing = _missing_yarns(p, rng, fields, along_warp=True)
    # the loose weft sinks into the empty lane, so the lane lies in shadow
    recess = np.where(missing, rng.uniform(0.7, 0.85), 1.0).astype(np.float32)
    return DefectPlan("broken_end", edits=YarnEdits(warp_present=~missing, recess=recess))


def plan_broken_yarn(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    missing = _missing_yarns(p, rng, fields, along_warp=False)
    recess = np.where(missing, rng.uniform(0.7, 0.85), 1.0).astype(np.float32)
    return DefectPlan("broken_yarn", edits=YarnEdits(weft_present=~missing, recess=recess))


def plan_white_stripe(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    s = _scale(p)
    along_warp = rng.uniform() < 0.5
    extent = p.height if along_warp else p.width
    length = float(extent * 1.5 if rng.uniform() < 0.3 else np.clip(rng.uniform(40, 200) * s, 16, 0.95 * extent))
    cx, cy = _centre(p, rng, min(length / 2, extent / 2 - 1) if along_warp else 8)
    if not along_warp:
        cy = float(rng.uniform(8, p.height - 8)) if p.height > 16 else p.height / 2
        cx = float(rng.uniform(length / 2, p.width - length / 2)) if length < p.width else p.width / 2
    uc, vc = to_fabric_coords(p, cx, cy)
    count = 1 if rng.uniform() < 0.7 else 2
    if along_warp:
        first = int(np.floor(uc / p.pitch_u))
        band = (fields["i"] >= first) & (fields["i"] < first + count)
        pos, centre, own = fields["v"], vc, fields["show_warp"]
    else:
        first = int(np.floor(vc / p.pitch_v))
        band = (fields["j"] >= first) & (fields["j"] < first + count)
        pos, centre, own = fields["u"], uc, ~fields["show_warp"]
    taper = np.clip((length / 2 - np.abs(pos - centre)) / 8.0, 0.0, 1.0)
    strength = rng.uniform(0.45, 0.75)
    white = np.array([0.95, 0.95, 0.92], np.float32)

    def effect(rgb: np.ndarray, f: dict) -> np.ndarray:
        # the bleached yarn itself loses most colour; crossing yarns in the band take less
        amount = strength * taper * band * np.where(own, 1.0, 0.6)
        target = white[None, None, :] * (0.4 + 0.6 * f["cover"])[..., None]
        a = amount[..., None]
        return rgb * (1 - a) + target * a

    return DefectPlan("white_stripe", effect=effect)


def plan_hole(p: FabricParams, rng: np.random.Generator, fields: dict) -> DefectPlan:
    s = _scale(p)
    radius = max(3.0, rng.uniform(4, 16) * s)
    cx, cy = _centre(p, rng, radius * 2 + 2)
    uc, vc = to_fabric_coords(p, cx, cy)
    core = _blob_radius(p, rng, cx, cy, radius, roughness=0.3, elongation=rng.uniform(1.0, 1.7))
    du = fields["u"] - uc
    dv = fields["v"] - vc
    # torn edges: every cut yarn ends at its own length, so yarn ends stick into the hole
    i_min, j_min = fields["i"].min(), fields["j"].min()
    jag_warp = rng.uniform(-0.45, 0.35, size=int(fields["i"].max() - i_min + 1)).astype(np.float32)
    jag_weft = rng.uniform(-0.45, 0.35, size=int(fields["j"].max() - j_min + 1)).astype(np.float32)
    warp_gone = (core < 1.25) & (np.abs(dv) < radius * (1 + jag_warp[fields["i"] - i_min])) & (core < 1.6)
    weft_gone = (core < 1.25) & (np.abs(du) < radius * (1 + jag_weft[fields["j"] - j_min])) & (core < 1.6)
    warp_gone |= core < 0.8
    weft_gone |= core < 0.8
    hole = core < 1.7
    # the fabric around a hole is pulled and puckered, catching less light
    recess = np.where((core >= 0.8) & (core < 1.5), 0.88, 1.0).astype(np.float32)
    return DefectPlan("hole", edits=YarnEdits(warp_present=~warp_gone, weft_present=~weft_gone, hole=hole, recess=recess))


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
