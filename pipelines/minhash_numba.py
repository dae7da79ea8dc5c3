"""The MinHash signature kernel compiled with numba: the same signatures as `minhash_kernel`, bit
for bit, several times faster.

`minhash_kernel` (numpy) stays the reference: it is what the module docstring there defines and
what the tests compare this kernel with, on the sample pool and on hypothesis strings. The
steps, and which side of the compiled boundary each runs on:

1. In Python, per document: the case and accent steps of `filters.text.normalize("aggressive")`
   (``str.lower`` and the NFKD mark stripping, C code behind Python calls; Unicode's case and
   decomposition tables stay Python's own). A batch's results are joined and encoded once as
   UTF-32, so the compiled code sees code points.
2. Compiled, per code point: the rest of the normalization (digit runs to ``0``, separator runs
   to one space; the class of each code point from the table `filters.text` builds from
   Python's own regexes), the split into tokens (scripts written without spaces: one token per
   character), each token's UTF-8 bytes and their xxh3-64 (the xxHash 0.8 algorithm with its
   default secret and seed 0, for tokens of up to 240 bytes), the shingle hashes, and the
   minimum of every permutation over them.
3. A token longer than 240 bytes (rare: a run of letters and digits with no separator) is
   hashed by the `xxhash` package in Python between two compiled passes, so the long-input path
   of xxh3 is never re-implemented here.

The compiled functions are cached on disk (numba's ``cache=True``: next to this module, or in
numba's user cache directory when that is read-only), so a process pays the compile time
(a few seconds) only the first time a machine runs this code.
"""
from __future__ import annotations

import unicodedata

import numpy as np

try:  # numba is a dependency; the numpy kernel stays usable without it
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

import xxhash

from filters import text as _text

from . import minhash_kernel as mk

AVAILABLE = numba is not None
LONG_TOKEN = 240  # bytes; longer tokens are hashed in Python (xxh3's long-input path)

_SPACE_CP = 0x20
_ZERO_CP = 0x30

# xxHash's 64-bit primes and XXH3's default secret (its first 136 bytes: all that inputs of up
# to 240 bytes read). Constants of the published algorithm (xxHash 0.8, XXH3_64bits).
_P64_1, _P64_2, _P64_3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_MX1, _MX2 = 0x165667919E3779F9, 0x9FB21C651E98DF25
_SECRET = np.frombuffer(bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3"
), dtype=np.uint8)
assert _SECRET.size == 136


def _no_space_table() -> np.ndarray:
    """True at the code points `minhash_kernel` makes tokens of their own."""
    table = np.zeros(0x110000, dtype=np.bool_)
    probe = mk._NO_SPACE.pattern[2:-2]  # the character class's ranges, as the regex holds them
    i = 0
    while i < len(probe):
        lo = probe[i]
        if i + 2 < len(probe) and probe[i + 1] == "-":
            hi = probe[i + 2]
            i += 3
        else:
            hi = lo
            i += 1
        table[ord(lo):ord(hi) + 1] = True
    return table


_TABLES: tuple[np.ndarray, np.ndarray] | None = None


def _tables() -> tuple[np.ndarray, np.ndarray]:
    global _TABLES
    if _TABLES is None:
        _TABLES = (_text._classes(), _no_space_table())
    return _TABLES


def _strip_marks(text: str) -> str:
    """`filters.text._strip_diacritics`, its mark removal compiled: NFKD, then every character of
    nonzero combining class dropped."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    if decomposed.isascii():
        return decomposed
    raw = decomposed.encode("utf-8", "surrogatepass")
    kept, dropped = _drop_marks(np.frombuffer(raw, dtype=np.uint8), _combining())
    return kept.tobytes().decode("utf-8", "surrogatepass") if dropped else decomposed


def _combining() -> np.ndarray:
    if _text._COMBINING is None:
        _text._strip_diacritics("\u00e9")  # builds the table
    return _text._COMBINING


def _cased(text: str) -> str:
    """Step 1: what `normalize("aggressive")` does before its digit and separator pass."""
    if text.isascii():
        return text.lower()
    return _strip_marks(_strip_marks(text).lower())


if AVAILABLE:
    _U = numba.uint64

    @njit(inline="always")
    def _read_le(buf, i, width):
        """The `width` bytes at buf[i:] as a little-endian unsigned integer."""
        v = _U(0)
        for k in range(width):
            v |= _U(buf[i + k]) << _U(8 * k)
        return v

    @njit(inline="always")
    def _read64(buf, i):
        return _read_le(buf, i, 8)

    @njit(inline="always")
    def _read32(buf, i):
        return _read_le(buf, i, 4)

    @njit(inline="always")
    def _mul128_fold64(a, b):
        m32 = _U(0xFFFFFFFF)
        a_lo, a_hi = a & m32, a >> _U(32)
        b_lo, b_hi = b & m32, b >> _U(32)
        lo_lo = a_lo * b_lo
        hi_lo = a_hi * b_lo
        lo_hi = a_lo * b_hi
        hi_hi = a_hi * b_hi
        cross = (lo_lo >> _U(32)) + (hi_lo & m32) + lo_hi
        upper = (hi_lo >> _U(32)) + (cross >> _U(32)) + hi_hi
        lower = (cross << _U(32)) | (lo_lo & m32)
        return lower ^ upper

    @njit(inline="always")
    def _xxh3_avalanche(h):
        h ^= h >> _U(37)
        h *= _U(_MX1)
        return h ^ (h >> _U(32))

    @njit(inline="always")
    def _xxh64_avalanche(h):
        h ^= h >> _U(33)
        h *= _U(_P64_2)
        h ^= h >> _U(29)
        h *= _U(_P64_3)
        return h ^ (h >> _U(32))

    @njit(inline="always")
    def _mix16(buf, i, secret, s):
        return _mul128_fold64(_read64(buf, i) ^ _read64(secret, s), _read64(buf, i + 8) ^ _read64(secret, s + 8))

    @njit
    def xxh3_64_short(buf, n, secret):
        """XXH3_64bits (seed 0) of buf[:n] for n <= 240."""
        if n == 0:
            return _xxh64_avalanche(_read64(secret, 56) ^ _read64(secret, 64))
        if n <= 3:
            c1, c2, c3 = _U(buf[0]), _U(buf[n >> 1]), _U(buf[n - 1])
            combined = (c1 << _U(16)) | (c2 << _U(24)) | c3 | (_U(n) << _U(8))
            return _xxh64_avalanche(combined ^ (_read32(secret, 0) ^ _read32(secret, 4)))
        if n <= 8:
            in1 = _read32(buf, 0)
            in2 = _read32(buf, n - 4)
            keyed = (in2 + (in1 << _U(32))) ^ (_read64(secret, 8) ^ _read64(secret, 16))
            h = keyed ^ (((keyed << _U(49)) | (keyed >> _U(15))) ^ ((keyed << _U(24)) | (keyed >> _U(40))))
            h *= _U(_MX2)
            h ^= (h >> _U(35)) + _U(n)
            h *= _U(_MX2)
            return h ^ (h >> _U(28))
        if n <= 16:
            lo = _read64(buf, 0) ^ (_read64(secret, 24) ^ _read64(secret, 32))
            hi = _read64(buf, n - 8) ^ (_read64(secret, 40) ^ _read64(secret, 48))
            swapped = _U(0)
            for k in range(8):
                swapped = (swapped << _U(8)) | ((lo >> _U(8 * k)) & _U(0xFF))
            return _xxh3_avalanche(_U(n) + swapped + hi + _mul128_fold64(lo, hi))
        acc = _U(n) * _U(_P64_1)
        if n <= 128:
            if n > 32:
                if n > 64:
                    if n > 96:
                        acc += _mix16(buf, 48, secret, 96)
                        acc += _mix16(buf, n - 64, secret, 112)
                    acc += _mix16(buf, 32, secret, 64)
                    acc += _mix16(buf, n - 48, secret, 80)
                acc += _mix16(buf, 16, secret, 32)
                acc += _mix16(buf, n - 32, secret, 48)
            acc += _mix16(buf, 0, secret, 0)
            acc += _mix16(buf, n - 16, secret, 16)
            return _xxh3_avalanche(acc)
        for r in range(8):
            acc += _mix16(buf, 16 * r, secret, 16 * r)
        acc = _xxh3_avalanche(acc)
        for r in range(8, n // 16):
            acc += _mix16(buf, 16 * r, secret, 16 * (r - 8) + 3)
        acc += _mix16(buf, n - 16, secret, 136 - 17)
        return _xxh3_avalanche(acc)

    @njit(inline="always")
    def _put_utf8(out, j, cp):
        if cp < 0x80:
            out[j] = cp
            return j + 1
        if cp < 0x800:
            out[j] = 0xC0 | (cp >> 6)
            out[j + 1] = 0x80 | (cp & 0x3F)
            return j + 2
        if cp < 0x10000:
            out[j] = 0xE0 | (cp >> 12)
            out[j + 1] = 0x80 | ((cp >> 6) & 0x3F)
            out[j + 2] = 0x80 | (cp & 0x3F)
            return j + 3
        out[j] = 0xF0 | (cp >> 18)
        out[j + 1] = 0x80 | ((cp >> 12) & 0x3F)
        out[j + 2] = 0x80 | ((cp >> 6) & 0x3F)
        out[j + 3] = 0x80 | (cp & 0x3F)
        return j + 4

    @njit(inline="always")
    def _utf8_at(buf, i):
        """The code point starting at byte i of well-formed UTF-8 (surrogates allowed, as Python's
        "surrogatepass" writes them) and the index of the byte after it."""
        b0 = np.int64(buf[i])
        if b0 < 0x80:
            return b0, i + 1
        if b0 < 0xE0:
            return ((b0 & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), i + 2
        if b0 < 0xF0:
            return (((b0 & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6)
                    | (np.int64(buf[i + 2]) & 0x3F)), i + 3
        return (((b0 & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
                | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F)), i + 4

    @njit(cache=True)
    def _drop_marks(src, combining):
        """The UTF-8 bytes of `src` less every character whose combining class is not 0, and
        whether there was any."""
        out = np.empty(src.size, dtype=np.uint8)
        j = 0
        i = 0
        dropped = False
        while i < src.size:
            if src[i] < 0x80:
                out[j] = src[i]
                j += 1
                i += 1
                continue
            cp, nxt = _utf8_at(src, i)
            if combining[cp]:
                dropped = True
            else:
                for k in range(i, nxt):
                    out[j] = src[k]
                    j += 1
            i = nxt
        return out[:j], dropped

    @njit(cache=True)
    def _token_hashes(points, doc_off, classes, no_space, secret):
        """Per document, the xxh3-64 of every token of `points` (the UTF-8 bytes of step 1's text).

        Returns (hashes, token_off, long_idx, long_start, long_end): the hashes of all documents'
        tokens one after another, document d's being hashes[token_off[d]:token_off[d + 1]]; and
        for each token longer than LONG_TOKEN bytes, its slot in `hashes` and its span of bytes in
        `points` (the caller fills that slot in)."""
        n_docs = doc_off.size - 1
        hashes = np.empty(points.size + 1, dtype=np.uint64)
        token_off = np.zeros(n_docs + 1, dtype=np.int64)
        # a long token spans more than LONG_TOKEN / 4 input bytes (a digit run can shrink to
        # one "0", never grow): this many at most, never regrown
        max_long = points.size // (LONG_TOKEN // 4) + 1
        long_idx = np.empty(max_long, dtype=np.int64)
        long_start = np.empty(max_long, dtype=np.int64)
        long_end = np.empty(max_long, dtype=np.int64)
        n_long = 0
        buf = np.empty(LONG_TOKEN + 4, dtype=np.uint8)  # room for one character past the limit
        t = 0
        for d in range(n_docs):
            prev = 0  # class of the previous code point; a separator run at the start is dropped
            blen = 0  # bytes of the token being built; LONG_TOKEN + 1 once past the limit
            start = 0  # its first code point
            in_token = False
            stop = doc_off[d + 1]
            nxt = doc_off[d]
            for i in range(doc_off[d], stop + 1):
                if i == stop:
                    emit = _SPACE_CP  # the document's end closes its last token
                elif i < nxt:
                    continue  # a continuation byte of the character just read
                else:
                    cp, nxt = _utf8_at(points, i)
                    c = classes[cp]
                    if c == 0:  # separator
                        emit = _SPACE_CP if prev != 0 else -1
                    elif c == 1:  # digit: a run becomes one "0"
                        emit = _ZERO_CP if prev != 1 else -1
                    else:
                        emit = np.int64(cp)
                    prev = c
                    if emit < 0:
                        continue
                alone = emit != _SPACE_CP and no_space[emit]
                if in_token and (emit == _SPACE_CP or alone):
                    if blen <= LONG_TOKEN:
                        hashes[t] = xxh3_64_short(buf, blen, secret)
                    else:
                        long_idx[n_long] = t
                        long_start[n_long] = start
                        long_end[n_long] = i
                        n_long += 1
                    t += 1
                    in_token = False
                if emit == _SPACE_CP:
                    continue
                if not in_token:
                    in_token = True
                    blen = 0
                    start = i
                if blen <= LONG_TOKEN:
                    blen = _put_utf8(buf, blen, emit)
                if alone:  # a character that is a token of its own
                    hashes[t] = xxh3_64_short(buf, blen, secret)
                    t += 1
                    in_token = False
            token_off[d + 1] = t
        return hashes[:t], token_off, long_idx[:n_long], long_start[:n_long], long_end[:n_long]

    @njit(inline="always")
    def _fmix64(x):
        x ^= x >> _U(33)
        x *= _U(0xFF51AFD7ED558CCD)
        x ^= x >> _U(33)
        x *= _U(0xC4CEB9FE1A85EC53)
        return x ^ (x >> _U(33))

    @njit(inline="always")
    def _shingle(th, lo, i, width, consts):
        acc = _U(width)
        for k in range(width):
            acc += th[lo + i + k] * consts[k]
        return _fmix64(acc)

    @njit(cache=True)
    def _signatures(th, token_off, ngram, consts, a, b):
        n_docs = token_off.size - 1
        k_perm = a.size
        out = np.empty((n_docs, k_perm), dtype=np.uint32)
        mins = np.empty(k_perm, dtype=np.uint64)
        for d in range(n_docs):
            lo, hi = token_off[d], token_off[d + 1]
            m = hi - lo
            width = min(ngram, m)
            count = max(m - ngram + 1, 1)
            mins[:] = _U(0xFFFFFFFFFFFFFFFF)
            for i in range(count):
                x = _shingle(th, lo, i, width, consts)
                for k in range(k_perm):
                    v = a[k] * x + b[k]
                    if v < mins[k]:
                        mins[k] = v
            for k in range(k_perm):
                out[d, k] = np.uint32(mins[k] >> _U(32))
        return out

    @njit(cache=True)
    def _band_keys(sigs, positions, seed, mul):
        n, n_bands, r = sigs.shape[0], positions.shape[0], positions.shape[1]
        out = np.empty((n, n_bands), dtype=np.int64)
        for d in range(n):
            for j in range(n_bands):
                h = _U(j + 1) * _U(seed)
                for i in range(r):
                    h ^= _U(sigs[d, positions[j, i]])
                    h *= _U(mul)
                    h ^= h >> _U(33)
                out[d, j] = np.int64(h)
        return out

    @njit(cache=True)
    def _sets_of(flat, counts, need):
        off = np.zeros(need.size + 1, dtype=np.int64)
        out = np.empty(counts[-1], dtype=np.uint64)
        pos = 0
        for j in range(need.size):
            d = need[j]
            part = np.sort(flat[counts[d]:counts[d + 1]])
            for i in range(part.size):
                if i == 0 or part[i] != part[i - 1]:
                    out[pos] = part[i]
                    pos += 1
            off[j + 1] = pos
        return out[:pos], off

    @njit(cache=True)
    def _pair_jaccard(flat, off, a, b):
        out = np.empty(a.size, dtype=np.float64)
        for k in range(a.size):
            i, i_end = off[a[k]], off[a[k] + 1]
            j, j_end = off[b[k]], off[b[k] + 1]
            size = (i_end - i) + (j_end - j)
            inter = 0
            while i < i_end and j < j_end:
                x, y = flat[i], flat[j]
                if x == y:
                    inter += 1
                    i += 1
                    j += 1
                elif x < y:
                    i += 1
                else:
                    j += 1
            union = size - inter
            out[k] = inter / union if union else 1.0
        return out

    @njit(cache=True)
    def _shingles(th, token_off, ngram, consts):
        n_docs = token_off.size - 1
        counts = np.empty(n_docs + 1, dtype=np.int64)
        counts[0] = 0
        for d in range(n_docs):
            m = token_off[d + 1] - token_off[d]
            counts[d + 1] = counts[d] + max(m - ngram + 1, 1)
        out = np.empty(counts[n_docs], dtype=np.uint64)
        for d in range(n_docs):
            lo = token_off[d]
            m = token_off[d + 1] - lo
            width = min(ngram, m)
            for i in range(counts[d + 1] - counts[d]):
                out[counts[d] + i] = _shingle(th, lo, i, width, consts)
        return out, counts


def _prepared(texts) -> tuple[np.ndarray, np.ndarray]:
    """Step 1 for a batch: every document's UTF-8 bytes after case folding and mark stripping,
    concatenated, and each document's start offset (n + 1 offsets)."""
    encoded = [_cased(t).encode("utf-8", "surrogatepass") for t in texts]
    off = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=off[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), off


def token_hashes(texts) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, offsets): every document's token hashes, as `minhash_kernel.token_hashes(
    minhash_kernel.tokens(text))` gives them, one document after another."""
    points, off = _prepared(texts)
    classes, no_space = _tables()
    th, token_off, long_idx, long_start, long_end = _token_hashes(points, off, classes, no_space, _SECRET)
    for slot, lo, hi in zip(long_idx.tolist(), long_start.tolist(), long_end.tolist()):
        token = _squeezed(points[lo:hi].tobytes().decode("utf-8", "surrogatepass"))
        th[slot] = xxhash.xxh3_64_intdigest(token.encode("utf-8", "surrogatepass"))
    return th, token_off


def _squeezed(token: str) -> str:
    """A long token's text (no separator inside) with its digit runs as one "0" each."""
    points = np.frombuffer(token.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return _text._squeeze(points).astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


def signatures(texts, num_perm: int = 256, ngram: int = 5, seed: int = 1) -> np.ndarray:
    """`minhash_kernel.signatures`, compiled: a (len(texts), num_perm) uint32 array."""
    perms = mk.permutations(num_perm, seed)
    th, token_off = token_hashes(texts)
    return _signatures(th, token_off, ngram, mk._order_constants(ngram), perms.a.ravel(), perms.b.ravel())


def shingle_sets(texts, ngram: int = 5) -> list[np.ndarray]:
    """`minhash_kernel.shingle_set` of every text."""
    sets = Hashed(texts, ngram).sets(np.arange(len(texts)))
    return [sets[j] for j in range(len(sets))]


class Sets:
    """Shingle sets of several documents, flat: document j's distinct shingle hashes, sorted, are
    ``flat[off[j]:off[j + 1]]``."""

    def __init__(self, flat: np.ndarray, off: np.ndarray):
        self.flat, self.off = flat, off

    def __len__(self) -> int:
        return len(self.off) - 1

    def __getitem__(self, j: int) -> np.ndarray:
        return self.flat[self.off[j]:self.off[j + 1]]


class Hashed:
    """A batch of texts tokenized and hashed once, for signatures and shingle sets both."""

    def __init__(self, texts, ngram: int):
        self.ngram, self.consts = ngram, mk._order_constants(ngram)
        self.th, self.token_off = token_hashes(texts)

    def signatures(self, num_perm: int, seed: int) -> np.ndarray:
        perms = mk.permutations(num_perm, seed)
        return _signatures(self.th, self.token_off, self.ngram, self.consts, perms.a.ravel(), perms.b.ravel())

    def sets(self, need: np.ndarray) -> Sets:
        """The shingle sets of the documents at indices `need`, in that order."""
        flat, counts = _shingles(self.th, self.token_off, self.ngram, self.consts)
        return Sets(*_sets_of(flat, counts, np.asarray(need, dtype=np.int64)))


def pair_jaccard(sets: Sets, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`minhash_kernel.jaccard(sets[a[k]], sets[b[k]])` for every k, compiled."""
    return _pair_jaccard(sets.flat, sets.off, np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))


def band_keys(sigs: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`minhash_kernel.band_keys`, compiled."""
    return _band_keys(sigs, np.ascontiguousarray(positions, dtype=np.int64), mk._BAND_SEED, mk._BAND_MUL)
