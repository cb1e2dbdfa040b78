package accesslog

import "sync/atomic"

// queue is a bounded multi-producer, single-consumer queue of lines
// (Vyukov's bounded queue): producers claim a slot with one CAS and never
// wait; a full queue refuses the line. Each slot keeps its buffer, so a
// warm queue allocates nothing.
type queue struct {
	slots []slot
	mask  uint64
	head  atomic.Uint64 // next position to fill
	_     [56]byte      // head and tail on their own cache lines
	tail  uint64        // next position to read; the consumer's alone
}

type slot struct {
	seq atomic.Uint64 // position+1 when full, position when free for it
	buf []byte
}

func (q *queue) init(n int) {
	q.slots = make([]slot, n)
	q.mask = uint64(n - 1)
	for i := range q.slots {
		q.slots[i].seq.Store(uint64(i))
	}
}

// push copies p into a free slot; false when the queue is full.
func (q *queue) push(p []byte) bool {
	for {
		pos := q.head.Load()
		s := &q.slots[pos&q.mask]
		seq := s.seq.Load()
		switch {
		case seq == pos:
			if q.head.CompareAndSwap(pos, pos+1) {
				if len(p) > maxLine {
					s.buf = append(append(s.buf[:0], p[:maxLine-1]...), '\n')
				} else {
					s.buf = append(s.buf[:0], p...)
				}
				s.seq.Store(pos + 1)
				return true
			}
		case seq < pos:
			return false // the slot still holds an unread line: full
		}
		// Another producer took pos: try the next one.
	}
}

// pop appends the oldest line to dst; false when the queue is empty.
func (q *queue) pop(dst []byte) ([]byte, bool) {
	s := &q.slots[q.tail&q.mask]
	if s.seq.Load() != q.tail+1 {
		return dst, false
	}
	dst = append(dst, s.buf...)
	s.seq.Store(q.tail + q.mask + 1)
	q.tail++
	return dst, true
}
