package admin

import (
	"bytes"
	"errors"
	"fmt"
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

// decodeBody parses a JSON object with no unknown fields and nothing after it.
func decodeBody(data []byte) (bucketBody, error) {
	var b bucketBody
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return b, errors.New("request body is empty: want a JSON object")
	}
	if trimmed[0] != '{' {
		return b, errors.New("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("malformed JSON: %v", err)
	}
	if dec.More() {
		return b, errors.New("malformed JSON: data after the object")
	}
	return b, nil
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// clientID parses and checks a client_id field.
func parseClientID(raw json.RawMessage) (string, error) {
	var id string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &id) != nil {
		return "", errors.New("client_id must be a string")
	}
	return id, checkClientID(id)
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
