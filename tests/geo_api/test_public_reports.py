"""What the public report form (随手拍, ``/report``) stands on, on the demo: photos kept
by the service — decoded, turned upright, stripped of the camera's metadata, bounded in
bytes and pixels, refused in Chinese when they are no image — and the open reports near
a spot, shown as anyone sees them (by their grid, never closer)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import text

from layers.crs import haversine_m
from tests.zh import zh_fault


@pytest.fixture
def photo_dir(client, tmp_path):
    client.app.state.settings.photos.dir = tmp_path
    return tmp_path


def _jpeg(size=(800, 600), orientation: int | None = None, secret: str | None = None) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if secret:
        exif[0x010E] = secret  # ImageDescription
        exif[0x8825] = {1: "N", 2: (34.0, 48.0, 1.0), 3: "E", 4: (113.0, 41.0, 1.0)}  # GPS
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_a_photo_is_kept_upright_and_without_its_metadata(client, photo_dir):
    sent = _jpeg(orientation=6, secret="郑州市金水区某小区3号楼")
    assert b"GPS" in sent or len(Image.open(io.BytesIO(sent)).getexif()) > 0
    r = client.post("/v1/photos", content=sent, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 201, r.text
    url, name = r.json()["url"], r.json()["name"]
    assert url.endswith(f"/v1/photos/{name}") and url.startswith("http")
    got = client.get(f"/v1/photos/{name}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert "immutable" in got.headers["cache-control"]
    kept = Image.open(io.BytesIO(got.content))
    assert kept.size == (600, 800)  # orientation 6: turned upright
    assert len(kept.getexif()) == 0 and "郑州".encode() not in got.content
    again = client.post("/v1/photos", content=sent, headers={"Content-Type": "image/jpeg"})
    assert again.json()["name"] == name and len(list(photo_dir.iterdir())) == 1  # one file for one photo


def test_a_large_photo_is_scaled_down(client, photo_dir):
    r = client.post("/v1/photos", content=_jpeg(size=(4000, 3000)), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 201
    kept = Image.open(io.BytesIO(client.get(f"/v1/photos/{r.json()['name']}").content))
    assert max(kept.size) == client.app.state.settings.photos.max_side


@pytest.mark.parametrize(
    "body, status",
    [
        (b"", 422),
        (b"%PDF-1.7 not a photo", 415),
        (b"GIF89a" + b"\x00" * 64, 415),
    ],
)
def test_what_is_no_photo_is_refused_in_chinese(client, photo_dir, body, status):
    r = client.post("/v1/photos", content=body, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == status and r.json()["field"] == "photo" and not zh_fault(r.json()), r.text
    assert not list(photo_dir.iterdir())


def test_a_gif_and_a_pixel_bomb_are_refused(client, photo_dir):
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, "GIF")
    r = client.post("/v1/photos", content=gif.getvalue(), headers={"Content-Type": "image/gif"})
    assert r.status_code == 415 and "GIF" in r.json()["detail"] and not zh_fault(r.json())
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 MP in a few kilobytes
    r = client.post("/v1/photos", content=bomb.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 422 and "pixels" in r.json()["detail"] and not zh_fault(r.json())
    assert not list(photo_dir.iterdir())


def test_a_photo_beyond_the_byte_limit_is_refused_before_it_is_read(client, photo_dir):
    limit = client.app.state.settings.photos.max_bytes
    r = client.post("/v1/photos", content=b"\xff" * (limit + 1), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and not zh_fault(r.json())


def test_unknown_photo_names(client, photo_dir):
    for name in ("0" * 32 + ".jpg", "../../etc/passwd", "x.jpg"):
        assert client.get(f"/v1/photos/{name}").status_code == 404


def _open_event(demo_db, public_space: bool):
    return demo_db.execute(
        text(
            """SELECT e.id, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat, g.code AS grid
               FROM events e JOIN event_categories c ON c.code = e.category_code JOIN grids g ON g.id = e.grid_id
               WHERE c.public_space = :p AND e.status NOT IN ('closed', 'rejected', 'duplicate')
                 AND e.reported_at >= gridbranch_now() - interval '20 days'
               ORDER BY e.reported_at DESC LIMIT 1"""
        ),
        {"p": public_space},
    ).one()


def test_nearby_reports_as_anyone_sees_them(client, demo_db):
    private = _open_event(demo_db, public_space=False)
    r = client.get("/v1/public/nearby", params={"lon": private.lon, "lat": private.lat})
    assert r.status_code == 200, r.text
    items = {i["service_request_id"]: i for i in r.json()["items"]}
    assert str(private.id) in items
    shown = items[str(private.id)]
    # where the public sees it: its grid's label point, not the report's own point
    assert haversine_m(private.lon, private.lat, shown["long"], shown["lat"]) > 1
    assert set(shown) >= {"service_name", "status_notes", "requested_datetime", "distance_m"}
    assert shown["distance_m"] % 50 == 0
    assert "contact" not in shown and "reporter" not in str(shown)

    public = _open_event(demo_db, public_space=True)
    r = client.get("/v1/public/nearby", params={"lon": public.lon, "lat": public.lat, "radius_m": 50})
    item = next(i for i in r.json()["items"] if i["service_request_id"] == str(public.id))
    assert (item["long"], item["lat"]) == (round(public.lon, 7), round(public.lat, 7)) and item["distance_m"] == 0


def test_nearby_refuses_bad_points_in_chinese(client):
    for params in ({"lon": 200, "lat": 34.8}, {"lon": 113.6, "lat": 34.8, "crs": "nonsense"}, {"lon": "x", "lat": 1}):
        r = client.get("/v1/public/nearby", params=params)
        assert r.status_code == 422 and not zh_fault(r.json()), r.text
