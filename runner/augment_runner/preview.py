"""preview.png: a contact sheet of one source episode and its augmented copies.

The top row shows a few frames of the first source episode (one camera); each row
below shows the same frames of one augmented copy. Frames are caught as they stream
through the pipeline, so making the sheet costs no extra decoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLUMNS = 4
MAX_COPY_ROWS = 16  # past this the sheet gets unwieldy; the last row says how many more
MAX_TILE_WIDTH = 320


def tile_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of one tile: the frame itself, shrunk when wider than MAX_TILE_WIDTH."""
    if width <= MAX_TILE_WIDTH:
        return height, width
    return max(1, round(height * MAX_TILE_WIDTH / width)), MAX_TILE_WIDTH


def sheet_size(height: int, width: int, copies: int) -> tuple[int, int]:
    """(width, height) in pixels of the sheet for frames of height x width."""
    tile_h, tile_w = tile_size(height, width)
    return COLUMNS * tile_w, (1 + min(copies, MAX_COPY_ROWS)) * tile_h


class PreviewCollector:
    """Keeps the preview frames of the first episode it sees, for one camera."""

    def __init__(self, camera: str, copies: int, columns: int = COLUMNS) -> None:
        self.camera = camera
        self.copies = copies
        self.rows = min(copies, MAX_COPY_ROWS)
        self.columns = columns
        self.episode: int | None = None
        self.length: int | None = None
        self.source: dict[int, np.ndarray] = {}
        self.copy_frames: dict[tuple[int, int], np.ndarray] = {}
        self.labels: dict[int, str] = {}

    def start_episode(self, episode: int, length: int, labels: list[str]) -> None:
        """Called before each source episode; the first one with frames is the one shown."""
        if self.episode is None and length > 0:
            self.episode, self.length = episode, length
            self.labels = dict(enumerate(labels))

    def _picks(
        self, episode: int, camera: str, frames: np.ndarray, offset: int
    ) -> list[tuple[int, int]]:
        if camera != self.camera or episode != self.episode or self.length is None:
            return []
        wanted = np.linspace(0, self.length - 1, self.columns).round().astype(int).tolist()
        return [(offset + i, i) for i in range(len(frames)) if offset + i in set(wanted)]

    def add_source(self, episode: int, camera: str, frames: np.ndarray, offset: int) -> None:
        for index, i in self._picks(episode, camera, frames, offset):
            self.source[index] = np.array(frames[i])

    def add_copy(
        self, episode: int, camera: str, slot: int, frames: np.ndarray, offset: int
    ) -> None:
        if slot >= self.rows:
            return
        for index, i in self._picks(episode, camera, frames, offset):
            self.copy_frames[(slot, index)] = np.array(frames[i])

    @property
    def has_frames(self) -> bool:
        """Whether any frame was caught (a shard whose episodes are all empty has none)."""
        return bool(self.source)

    def save(self, path: Path) -> Path:
        indices = sorted(self.source)
        if not indices:
            raise ValueError("no frames were collected for the preview")
        height, width = self.source[indices[0]].shape[:2]
        tile_h, tile_w = tile_size(height, width)
        sheet = Image.new("RGB", (self.columns * tile_w, (1 + self.rows) * tile_h), (0, 0, 0))
        rows = [("source episode", self.source)]
        for slot in range(self.rows):
            frames = {i: f for (s, i), f in self.copy_frames.items() if s == slot}
            label = self.labels.get(slot, f"copy {slot}")
            if slot == self.rows - 1 and self.copies > self.rows:
                label += f" (+{self.copies - self.rows} more copies not shown)"
            rows.append((label, frames))
        for row, (label, frames) in enumerate(rows):
            for column, index in enumerate(indices):
                if index in frames:
                    pixels = _eight_bits(frames[index])
                    if pixels.shape[-1] == 1:  # a grey camera: paste converts it to RGB
                        pixels = pixels[..., 0]
                    tile = Image.fromarray(pixels).resize((tile_w, tile_h))
                    sheet.paste(tile, (column * tile_w, row * tile_h))
            _label(sheet, label, row * tile_h)
        sheet.save(path)
        return path


def _eight_bits(pixels: np.ndarray) -> np.ndarray:
    """A frame as 8-bit levels for the sheet (a PNG of 8 bits per channel): uint16
    frames (video deeper than 8 bits) are narrowed, which the sheet alone sees."""
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)  # the top 8 of the 16 bits
    return pixels


def _label(sheet: Image.Image, text: str, top: int) -> None:
    draw = ImageDraw.Draw(sheet)
    box = draw.textbbox((2, top + 1), text)
    draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
    draw.text((2, top + 1), text, fill=(255, 255, 255))
