"""The plain script a user would write instead of `winnow rephrase`: send chat-completion request
bodies (one JSON object a line) to an OpenAI-compatible server with httpx and asyncio, at most
N at once, and write each answer's text with its line index. No cache, no chunking, a simple retry.

    python bench/peer_asyncio_rephrase.py REQUESTS.jsonl --base-url URL --concurrency N --out ANSWERS.jsonl
"""
import argparse
import asyncio
import json
import sys
import time

import httpx


async def ask(client, sem, body, attempts=3):
    for attempt in range(attempts):
        try:
            async with sem:
                r = await client.post("/chat/completions", json=body)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        if attempt + 1 < attempts:
            await asyncio.sleep(2 ** attempt)
    return None


async def main(args):
    with open(args.requests, encoding="utf-8") as fh:
        bodies = [json.loads(line) for line in fh if line.strip()]
    sem = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=args.base_url, limits=limits, timeout=120.0) as client:
        answers = await asyncio.gather(*(ask(client, sem, b) for b in bodies))
    seconds = time.perf_counter() - start
    tokens_in = tokens_out = failed = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for i, a in enumerate(answers):
            if a is None:
                failed += 1
                continue
            usage = a.get("usage") or {}
            tokens_in += usage.get("prompt_tokens") or 0
            tokens_out += usage.get("completion_tokens") or 0
            content = a["choices"][0]["message"]["content"]
            out.write(json.dumps({"index": i, "content": content}, ensure_ascii=False) + "\n")
    done = len(bodies) - failed
    print(f"requests {done} failed {failed} seconds {seconds:.3f} requests/s {done / seconds:.1f} "
          f"tokens_in/s {tokens_in / seconds:.0f} tokens_out/s {tokens_out / seconds:.0f} "
          f"tokens_in {tokens_in} tokens_out {tokens_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("requests")
    p.add_argument("--base-url", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", required=True)
    sys.exit(asyncio.run(main(p.parse_args())))
