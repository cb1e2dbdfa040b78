package admin

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/goccy/go-json"
)

// Largest values the API accepts: they keep capacity/rate in nanoseconds
// inside an int64.
const (
	maxCapacity    = 1_000_000_000
	maxClientIDLen = 256
	minRatePerSec  = 0.001
	maxRatePerSec  = 1_000_000_000
)

// bucketBody is a request body. Every field is kept raw so that each one is
// checked strictly and the error names it.
type bucketBody struct {
	ClientID   json.RawMessage `json:"client_id"`
	Capacity   json.RawMessage `json:"capacity"`
	Tokens     json.RawMessage `json:"tokens"`
	RatePerSec json.RawMessage `json:"rate_per_sec"`
}

// decodeBody parses a bucket body strictly (see decodeObject).
func decodeBody(data []byte) (bucketBody, error) {
	var b bucketBody
	err := decodeObject(data, map[string]*json.RawMessage{
		"client_id": &b.ClientID, "capacity": &b.Capacity, "tokens": &b.Tokens, "rate_per_sec": &b.RatePerSec,
	}, "client_id, capacity, tokens, rate_per_sec")
	return b, err
}

// decodeObject parses a JSON object strictly, as the README promises: only
// the given fields, in their exact case, each at most once, never null, in
// valid UTF-8, and nothing after the object. goccy/go-json alone would
// match keys case-insensitively and let a duplicate key win, so the object
// is walked with encoding/json's tokenizer first. names lists the fields
// for the error message.
func decodeObject(data []byte, fields map[string]*json.RawMessage, names string) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return errors.New("request body is empty: want a JSON object")
	}
	if trimmed[0] != '{' {
		return errors.New("request body must be a JSON object")
	}
	if !utf8.Valid(trimmed) {
		return errors.New("request body is not valid UTF-8")
	}
	dec := stdjson.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("malformed JSON: %v", err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("malformed JSON: %v", err)
		}
		key, _ := tok.(string)
		var raw stdjson.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("malformed JSON: %v", err)
		}
		dst, ok := fields[key]
		switch {
		case !ok:
			return fmt.Errorf("unknown field %q (fields are %s, in lower case)", key, names)
		case *dst != nil:
			return fmt.Errorf("duplicate field %q", key)
		case string(raw) == "null":
			return fmt.Errorf("%s must not be null", key)
		}
		*dst = json.RawMessage(raw)
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("malformed JSON: data after the object")
	}
	return nil
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// clientID parses and checks a client_id field.
func parseClientID(raw json.RawMessage) (string, error) {
	var id string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &id) != nil {
		return "", errors.New("client_id must be a string")
	}
	if loneSurrogate(raw) {
		// A decoder would store U+FFFD in its place: another ID than sent.
		return "", errors.New("client_id has a lone UTF-16 surrogate escape")
	}
	return id, checkClientID(id)
}

// loneSurrogate reports whether a JSON string has a \uD800-\uDFFF escape
// that is not half of a valid surrogate pair.
func loneSurrogate(raw []byte) bool {
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if raw[i+1] != 'u' {
			i++ // \\, \" and the like: skip the escaped byte
			continue
		}
		r, ok := hex4(raw, i+2)
		if !ok {
			return false // malformed; the decoder reports it
		}
		i += 5
		switch {
		case r >= 0xdc00 && r <= 0xdfff:
			return true
		case r >= 0xd800 && r <= 0xdbff:
			if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if lo, ok := hex4(raw, i+3); ok && lo >= 0xdc00 && lo <= 0xdfff {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[at:at+4]), 16, 16)
	return rune(n), err == nil
}

func checkClientID(id string) error {
	if len(id) == 0 || len(id) > maxClientIDLen {
		return fmt.Errorf("client_id must be 1 to %d bytes long", maxClientIDLen)
	}
	if !utf8.ValidString(id) {
		return errors.New("client_id must be valid UTF-8")
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return errors.New("client_id must not contain control characters")
		}
	}
	return nil
}

// parseInt parses an integer field in [lo, hi]; fractions, exponents,
// strings and out-of-range numbers are refused.
func parseInt(name string, raw json.RawMessage, lo, hi int64) (int64, error) {
	s := string(raw)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if json.Valid(raw) && len(s) > 0 && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
			if _, ferr := strconv.ParseFloat(s, 64); ferr == nil && !bytes.ContainsAny(raw, ".eE") {
				return 0, fmt.Errorf("%s must be between %d and %d", name, lo, hi)
			}
			return 0, fmt.Errorf("%s must be a whole number", name)
		}
		return 0, fmt.Errorf("%s must be a number", name)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%s must be between %d and %d", name, lo, hi)
	}
	return n, nil
}

// parseRate parses rate_per_sec: a number, fractions allowed.
func parseRate(raw json.RawMessage) (float64, error) {
	s := string(raw)
	if len(s) == 0 || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
		return 0, errors.New("rate_per_sec must be a number")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < minRatePerSec || f > maxRatePerSec {
		return 0, fmt.Errorf("rate_per_sec must be between %g and %g", minRatePerSec, float64(maxRatePerSec))
	}
	return f, nil
}

// checkPathMatch refuses a body client_id that differs from the path's.
func checkPathMatch(raw json.RawMessage, pathID string) error {
	if !present(raw) {
		return nil
	}
	id, err := parseClientID(raw)
	if err != nil {
		return err
	}
	if id != pathID {
		return errors.New("client_id in the body does not match the path")
	}
	return nil
}
