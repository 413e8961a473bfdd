#!/usr/bin/env python3
"""Independent reference for gosd's CLIP tokenizer tests.

Writes the BPE ids (no start/end/padding) of the prompts in cases.json to
tokens.json, using only Python's standard library plus the `regex` module, so
that text cleanup (html.unescape, str.strip, str.lower with its special
cases) and the character classes of CLIP's pre-tokenisation pattern come from
Python itself rather than from the Go code under test. ftfy is not used,
matching the Go tokenizer. Non-UTF-8 cases are given as byte strings in
cases.json ("bytes_hex") and decoded like Go's strings.ToValidUTF8 (one
U+FFFD per run of invalid bytes).

Usage (from the repository root):
    python3 testdata/clip/ref_tokenize.py ../shared/models/sd15/tokenizer \
        testdata/clip/cases.json > testdata/clip/tokens.json
"""
import html
import json
import sys

import regex

PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def byte_symbols():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def load(folder):
    with open(folder + "/vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    with open(folder + "/merges.txt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    ranks = {}
    for line in lines[1:]:
        if line:
            a, b = line.split(" ")
            ranks.setdefault((a, b), len(ranks))
    return vocab, ranks


def bpe(word, ranks):
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        ranked = [(ranks[p], p) for p in zip(parts, parts[1:]) if p in ranks]
        if not ranked:
            break
        first, second = min(ranked)[1]
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def clean(text):
    text = html.unescape(html.unescape(text)).strip()
    text = regex.sub(r"\s+", " ", text).strip()
    return text.lower()


def encode(text, vocab, ranks, table):
    ids = []
    for word in PATTERN.findall(clean(text)):
        if word in ("<|startoftext|>", "<|endoftext|>"):
            ids.append(vocab[word])
            continue
        mapped = "".join(table[b] for b in word.encode("utf-8"))
        ids.extend(vocab[p] for p in bpe(mapped, ranks))
    return ids


def decode_like_go(raw):
    out, i = [], 0
    bad = False
    while i < len(raw):
        for n in (1, 2, 3, 4):
            try:
                ch = raw[i:i + n].decode("utf-8")
                if len(ch) == 1:
                    break
            except UnicodeDecodeError:
                ch = None
        else:
            ch = None
        if ch is None:
            if not bad:
                out.append("\ufffd")
            bad = True
            i += 1
        else:
            out.append(ch)
            bad = False
            i += n
    return "".join(out)


def main():
    vocab, ranks = load(sys.argv[1])
    table = byte_symbols()
    with open(sys.argv[2], encoding="utf-8") as f:
        cases = json.load(f)
    result = []
    for c in cases:
        text = c["text"] if "text" in c else decode_like_go(bytes.fromhex(c["bytes_hex"]))
        result.append({"name": c["name"], "ids": encode(text, vocab, ranks, table)})
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
