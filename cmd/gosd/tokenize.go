package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gosd/gosd/sd/clip"
)

func runTokenize(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", stderr)
	dir := fs.String("tokenizer", "", "folder with vocab.json and merges.txt")
	raw := fs.Bool("raw", false, "print only the BPE ids, without start, end and padding to 77")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = os.Getenv("GOSD_TOKENIZER")
	}
	if *dir == "" {
		return usagef("--tokenizer DIR (or $GOSD_TOKENIZER) is required")
	}
	if len(pos) == 0 {
		return usagef("give the text to tokenize")
	}
	tok, err := clip.LoadTokenizer(*dir)
	if err != nil {
		return err
	}
	ids := tok.Encode(strings.Join(pos, " "))
	if !*raw {
		var truncated bool
		ids, truncated = tok.Pad77(ids)
		if truncated {
			fmt.Fprintln(stderr, "gosd tokenize: warning: text longer than 75 tokens was truncated")
		}
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	fmt.Fprintln(stdout, strings.Join(parts, " "))
	return nil
}
