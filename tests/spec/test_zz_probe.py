import asyncio
import httpx
from helpers import digest_of, start_upload, random_bytes

async def test_probe(client: httpx.AsyncClient) -> None:
    x, y = b"X" * 1000, b"Y" * 1000
    location = await start_upload(client, "app")
    ra, rb = await asyncio.gather(
        client.patch(location, content=x, headers={"Content-Range": "0-999"}),
        client.patch(location, content=y, headers={"Content-Range": "0-999"}),
    )
    print(ra.status_code, rb.status_code)
    r = await client.put(location, params={"digest": digest_of(x)})
    print("put x", r.status_code, r.text)
    if r.status_code == 201:
        got = (await client.get(f"/v2/app/blobs/{digest_of(x)}")).content
        print("served", got[:5], digest_of(got) == digest_of(x))
