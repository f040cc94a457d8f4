"""Generate examples/example.jpg: a small synthetic photo-like image (smooth gradients, sharp
edges, fine texture, text-like strokes) compressed hard enough (quality 20, 4:2:0) that JPEG
artifacts are visible. Deterministic: the same bytes every run."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_image(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    sky = np.stack([90 + 0.3 * y, 140 + 0.25 * y, 230 - 0.2 * y], -1)
    hills = (y > 150 + 25 * np.sin(x / 40.0))[..., None]
    grass = np.stack([60 + 30 * np.sin(x / 3.0) * np.cos(y / 5.0), 140 + 20 * np.sin(y / 2.0), 50 + 0 * x], -1)
    img = np.where(hills, grass, sky) + rng.normal(0, 4, (height, width, 3))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse((220, 30, 280, 90), fill=(250, 220, 60))
    d.rectangle((30, 110, 110, 200), fill=(180, 40, 40), outline=(20, 20, 20), width=3)
    d.polygon([(25, 110), (70, 70), (115, 110)], fill=(90, 50, 30))
    d.text((130, 200), "kdecode", fill=(255, 255, 255))
    return im


if __name__ == "__main__":
    out = Path(__file__).with_name("example.jpg")
    make_image().save(out, "JPEG", quality=20, subsampling=2)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
