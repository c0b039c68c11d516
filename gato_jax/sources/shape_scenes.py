"""Procedural scenes of coloured shapes, with captions and question/answer pairs that are exact.

A scene places 1-5 objects (circle, square or triangle, in one of five colours) on a plain grey
background, each inside its own cell of a 3x3 grid, so no two objects touch and every object has
an unambiguous position ("top left", ..., "center", ..., "bottom right"). Everything derives from
a `numpy.random.Generator`: the same seed draws the same pixels, caption and questions.

Colours are flat, without antialiasing, so a scene can be recovered from its pixels alone
(`scene_from_image`): tests re-derive the objects of a stored image and check that its caption
and answers agree with what was drawn. Captions and questions use only each object's shape,
colour and grid cell, never its exact size or offset.

  scene = sample_scene(np.random.default_rng(0))
  image = draw(scene)                  # uint8 [64, 64, 3]
  caption(scene)                       # "a red circle on the left and two blue squares ..."
  questions(scene, rng)                # [("count", "how many circles are there?", "one"), ...]

This module needs only numpy.
"""

import dataclasses
import itertools

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLORS = {
  "red": (220, 30, 30),
  "green": (30, 160, 50),
  "blue": (30, 70, 220),
  "yellow": (235, 200, 20),
  "purple": (140, 50, 180),
}
GRID = 3  # Cells per side.
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "middle", "right")
# Where a group of objects that share a column is, in captions ("two red circles on the left").
COLUMN_PHRASES = ("on the left", "in the middle", "on the right")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION_TYPES = ("count", "color", "shape", "position", "exists")
# Object radius as a fraction of a cell; the upper bound leaves room for a 1-pixel margin.
_SIZE_RANGE = (0.25, 0.40)


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One shape: its kind and grid cell (what text describes) and its pixel geometry."""

  shape: str
  color: str
  row: int  # Grid row, 0 (top) to 2 (bottom).
  col: int  # Grid column, 0 (left) to 2 (right).
  x: float = 0.0  # Centre, in pixels from the left edge.
  y: float = 0.0  # Centre, in pixels from the top edge.
  size: float = 0.0  # Radius of a circle; half the side or height of the others.


@dataclasses.dataclass(frozen=True)
class Scene:
  image_size: int
  background: int  # Grey level of the background, the same in all three channels.
  objects: tuple[SceneObject, ...]  # Sorted by (row, col): reading order.


def cell_name(row: int, col: int) -> str:
  """ "top left", "top middle", ..., "center", ..., "bottom right"."""
  if row == 1 and col == 1:
    return "center"
  return f"{ROWS[row]} {COLUMNS[col]}"


def sample_scene(rng: np.random.Generator, image_size: int = 64, max_objects: int = 5) -> Scene:
  """Draws a random scene description (no pixels yet).

  Args:
    rng: the only source of randomness.
    image_size: side of the square image in pixels; at least 48, so shapes stay recognisable.
    max_objects: at most this many objects (1 to 9, one per grid cell).

  Returns:
    A Scene with objects sorted in reading order.
  """
  if image_size < 48:
    raise ValueError(f"image_size must be at least 48 pixels, got {image_size}")
  if not 1 <= max_objects <= GRID * GRID:
    raise ValueError(f"max_objects must be in [1, {GRID * GRID}], got {max_objects}")
  cell = image_size / GRID
  count = int(rng.integers(1, max_objects + 1))
  objects = []
  for index in sorted(rng.choice(GRID * GRID, size=count, replace=False)):
    row, col = divmod(int(index), GRID)
    size = cell * rng.uniform(*_SIZE_RANGE)
    # Keep the whole shape (and one pixel) inside its cell: objects never touch.
    slack = cell / 2 - size - 1.0
    x = (col + 0.5) * cell + rng.uniform(-slack, slack)
    y = (row + 0.5) * cell + rng.uniform(-slack, slack)
    objects.append(
      SceneObject(
        str(rng.choice(SHAPES)),
        str(rng.choice(list(COLORS))),
        row,
        col,
        float(x),
        float(y),
        float(size),
      )
    )
  # The background is grey, so it never equals an object colour.
  return Scene(image_size, int(rng.integers(180, 251)), tuple(objects))


def _mask(obj: SceneObject, image_size: int) -> np.ndarray:
  # Pixel centres, as a rasteriser samples them.
  ys, xs = np.mgrid[0:image_size, 0:image_size] + 0.5
  dx, dy = xs - obj.x, ys - obj.y
  if obj.shape == "circle":
    return dx * dx + dy * dy <= obj.size * obj.size
  if obj.shape == "square":
    # 0.85 of the radius gives a square of about the circle's area.
    half = 0.85 * obj.size
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)
  if obj.shape == "triangle":
    # Apex up; the base is as wide as the triangle is tall (2 * size).
    return (dy >= -obj.size) & (dy <= obj.size) & (np.abs(dx) <= (dy + obj.size) / 2)
  raise ValueError(f"unknown shape {obj.shape!r}; shapes are {SHAPES}")


def draw(scene: Scene) -> np.ndarray:
  """The scene's uint8 [S, S, 3] RGB image: flat colours, no antialiasing."""
  image = np.full((scene.image_size, scene.image_size, 3), scene.background, np.uint8)
  for obj in scene.objects:
    image[_mask(obj, scene.image_size)] = COLORS[obj.color]
  return image


def scene_from_image(image: np.ndarray) -> Scene:
  """Recovers shapes, colours and cells from a drawn image (sizes are the pixel areas' roots).

  Each connected region of an object colour is one object; its shape follows from how much of
  its bounding box it fills (square 1, circle pi/4, triangle 1/2).
  """
  from scipy import ndimage  # A JAX dependency; only this inverse needs it.

  image = np.asarray(image)
  image_size = image.shape[0]
  cell = image_size / GRID
  objects = []
  for color, rgb in COLORS.items():
    labels, count = ndimage.label(np.all(image == rgb, axis=-1))
    for region in range(1, count + 1):
      ys, xs = np.nonzero(labels == region)
      box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
      fill = len(ys) / box
      shape = "triangle" if fill < 0.64 else "circle" if fill < 0.9 else "square"
      y, x = ys.mean() + 0.5, xs.mean() + 0.5
      objects.append(
        SceneObject(
          shape, color, int(y // cell), int(x // cell), float(x), float(y), float(np.sqrt(len(ys)))
        )
      )
  objects.sort(key=lambda o: (o.row, o.col))
  return Scene(image_size, int(image[0, 0, 0]), tuple(objects))


def _noun_phrase(count: int, color: str, shape: str) -> str:
  return f"{'a' if count == 1 else NUMBERS[count]} {color} {shape}{'s' if count > 1 else ''}"


def _join(phrases: list[str]) -> str:
  return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene) -> str:
  """Groups of identical objects, left to right, each with its column when the group shares one.

  e.g. "two red circles on the left and a blue square in the middle".
  """
  groups: dict[tuple[str, str], list[SceneObject]] = {}
  for obj in scene.objects:
    groups.setdefault((obj.color, obj.shape), []).append(obj)
  ordered = sorted(
    groups.items(), key=lambda kv: (min(o.col for o in kv[1]), min(o.row for o in kv[1]), kv[0])
  )
  phrases = []
  for (color, shape), members in ordered:
    phrase = _noun_phrase(len(members), color, shape)
    columns = {o.col for o in members}
    if len(columns) == 1:
      phrase += " " + COLUMN_PHRASES[columns.pop()]
    phrases.append(phrase)
  return _join(phrases)


def _unique_references(scene: Scene, obj: SceneObject, without: str) -> list[str]:
  """Phrases that pick out `obj` alone, using neither its `without` attribute ("color", ...)."""
  cell = f"in the {cell_name(obj.row, obj.col)}"
  candidates = {
    ("shape",): (lambda o: o.shape == obj.shape, f"the {obj.shape}"),
    ("color",): (lambda o: o.color == obj.color, f"the {obj.color} object"),
    ("color", "shape"): (
      lambda o: (o.color, o.shape) == (obj.color, obj.shape),
      f"the {obj.color} {obj.shape}",
    ),
    # Cells hold one object each, so a cell alone always identifies.
    ("position",): (lambda o: (o.row, o.col) == (obj.row, obj.col), f"the object {cell}"),
  }
  return [
    text
    for uses, (matches, text) in candidates.items()
    if without not in uses and sum(map(matches, scene.objects)) == 1
  ]


def questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
  """(type, question, answer), one per question type the scene supports, in QUESTION_TYPES order.

  count and exists include absent shapes and colours (answers "zero", "no"); color, shape and
  position ask about an object through a description that identifies it without giving away the
  answer, and are left out when no object has one.
  """
  out = []
  # count: a shape, a colour, or every object.
  targets = [("shape", s) for s in SHAPES] + [("color", c) for c in COLORS] + [("all", "")]
  kind, value = targets[int(rng.integers(len(targets)))]
  if kind == "shape":
    question, n = f"how many {value}s are there?", sum(o.shape == value for o in scene.objects)
  elif kind == "color":
    question, n = (
      f"how many {value} objects are there?",
      sum(o.color == value for o in scene.objects),
    )
  else:
    question, n = "how many objects are there?", len(scene.objects)
  out.append(("count", question, NUMBERS[n]))

  asks = {
    "color": ("what color is {}?", lambda o: o.color),
    "shape": ("what shape is {}?", lambda o: o.shape),
    "position": ("where is {}?", lambda o: cell_name(o.row, o.col)),
  }
  for attribute, (template, answer) in asks.items():
    options = [
      (reference, obj)
      for obj in scene.objects
      for reference in _unique_references(scene, obj, attribute)
    ]
    if options:
      reference, obj = options[int(rng.integers(len(options)))]
      out.append((attribute, template.format(reference), answer(obj)))

  # exists: half the time a present (colour, shape) pair, otherwise an absent one if any.
  present = sorted({(o.color, o.shape) for o in scene.objects})
  absent = [p for p in itertools.product(COLORS, SHAPES) if p not in present]
  pool = present if (rng.random() < 0.5 or not absent) else absent
  color, shape = pool[int(rng.integers(len(pool)))]
  out.append(("exists", f"is there a {color} {shape}?", "yes" if pool is present else "no"))
  return out


def make_example(seed: int, image_size: int = 64, max_objects: int = 5) -> dict:
  """A scene from `seed`: {"image", "caption", "qa": [(type, question, answer)], "scene"}."""
  rng = np.random.default_rng(seed)
  scene = sample_scene(rng, image_size, max_objects)
  return {
    "image": draw(scene),
    "caption": caption(scene),
    "qa": questions(scene, rng),
    "scene": scene,
  }
