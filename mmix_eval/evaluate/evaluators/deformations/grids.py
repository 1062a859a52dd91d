"""The deformation grids (Table 4, Table 9, a user's YAML): names, kinds, values. Imports no torch, so
options can be checked and help shown without loading it; the maps themselves are in geometry.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mmix_eval.errors import UserError
from mmix_eval.evaluate.base import OptionError

KINDS = ("rotation", "shear", "zoom")
INTERPOLATIONS = ("nearest", "bilinear")
# Which rendering produced a deformation row (recorded in its settings, so a report can tell old from new).
RENDERER = {
    "nearest": "official-nearest-v2 (scipy affine_transform order 0, constant 0)",
    "bilinear": "kornia-remap-bilinear-v2 (zero padding)",
}


@dataclass(frozen=True)
class Deformation:
    name: str
    kind: str  # rotation | shear | zoom
    value: float  # degrees (rotation, shear: the half-width of U(−v, v)) or percent (zoom)

    @property
    def label(self) -> str:
        if self.kind == "rotation":
            return f"Rotation U(−{self.value:g}°, {self.value:g}°)"
        if self.kind == "shear":
            return f"Shearing U(−{self.value:g}°, {self.value:g}°)"
        return f"Zoom {'in' if self.value < 100 else 'out'} ({self.value:g} % rescale)"


def _grid(*items) -> list[Deformation]:
    out = []
    for kind, v in items:
        name = {
            "rotation": f"rotation{v:g}",
            "shear": f"shear{v:g}",
            "zoom": f"zoom_{'in' if v < 100 else 'out'}{v:g}",
        }[kind]
        out.append(Deformation(name, kind, float(v)))
    return out


# Paper Table 4 (CIFAR-100, PreActResNet34) and Appendix Table 9's extension.
TABLE4 = _grid(
    ("rotation", 20),
    ("rotation", 40),
    ("shear", 28.6),
    ("shear", 57.3),
    ("zoom", 60),
    ("zoom", 80),
    ("zoom", 120),
    ("zoom", 140),
)
TABLE9 = TABLE4 + _grid(
    ("rotation", 60),
    ("rotation", 80),
    ("shear", 114.6),
    ("shear", 143.2),
    ("shear", 171.9),
    ("zoom", 20),
    ("zoom", 40),
    ("zoom", 160),
    ("zoom", 180),
)
GRIDS = {"table4": TABLE4, "table9": TABLE9}


def load_grid(spec: str) -> tuple[str, list[Deformation]]:
    """'table4', 'table9' or a YAML file: a list of {name?, rotation|shear|zoom: value}."""
    if spec in GRIDS:
        return spec, list(GRIDS[spec])
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise OptionError("grid", f"expected table4, table9 or a .yaml file, got '{spec}'")
    from mmix_eval.io import load_yaml

    data = load_yaml(path, "grid")
    if isinstance(data, dict) and set(data) == {"grid"}:
        data = data["grid"]
    if not isinstance(data, list) or not data:
        raise UserError(
            f"grid '{path}': expected a non-empty list of deformations like '- {{rotation: 30}}', got {type(data).__name__}"
        )
    out, names = [], set()
    for i, item in enumerate(data):
        where = f"grid '{path}' item {i + 1}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping like {{rotation: 30}}, got {item!r}")
        unknown = set(item) - {"name", *KINDS}
        if unknown:
            raise UserError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected name and one of {', '.join(KINDS)}"
            )
        kinds = [k for k in KINDS if k in item]
        if len(kinds) != 1:
            raise UserError(f"{where}: expected exactly one of {', '.join(KINDS)}, got {len(kinds)}")
        kind, value = kinds[0], item[kinds[0]]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where}: '{kind}' expected a finite number, got {value!r}")
        if kind == "zoom" and value <= 0:
            raise UserError(f"{where}: 'zoom' expected a percentage > 0, got {value!r}")
        if kind != "zoom" and value < 0:
            raise UserError(f"{where}: '{kind}' expected a range half-width >= 0 degrees, got {value!r}")
        d = _grid((kind, value))[0]
        if "name" in item:
            d = Deformation(str(item["name"]), kind, float(value))
        if d.name in names:
            raise UserError(f"{where}: duplicate condition name '{d.name}'")
        names.add(d.name)
        out.append(d)
    return str(path), out
