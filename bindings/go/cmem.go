package parley

// #include "parley_go.h"
import "C"

import (
	"strconv"
	"strings"
	"unsafe"
)

// cmem holds the C memory of one call's arguments (option structs, string
// arrays). cgo forbids passing Go memory that holds Go pointers to C, and
// the option structs point to each other and to strings, so every argument
// that holds a pointer lives in C memory, freed after the call.
type cmem struct{ ptrs []unsafe.Pointer }

func (m *cmem) alloc(size C.size_t) unsafe.Pointer {
	if size == 0 {
		size = 1
	}
	p := C.calloc(1, size)
	if p == nil {
		panic("parley: out of C memory")
	}
	m.ptrs = append(m.ptrs, p)
	return p
}

// bytes copies s into C memory with a NUL after it; the length is passed
// separately to the _n functions, so a NUL inside s reaches Parley, which
// refuses it naming its offset.
func (m *cmem) bytes(s string) *C.char {
	p := C.CString(s)
	m.ptrs = append(m.ptrs, unsafe.Pointer(p))
	return p
}

// cstr is bytes for a NUL-terminated parameter: a NUL inside s would cut it
// short, so it is refused here as Parley refuses one in text.
func (m *cmem) cstr(what, s string) (*C.char, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return nil, errorf(StatusInvalidArgument, "%s contains a NUL byte at byte offset %d", what, i)
	}
	return m.bytes(s), nil
}

// cstrOrNil is cstr, with "" as NULL.
func (m *cmem) cstrOrNil(what, s string) (*C.char, error) {
	if s == "" {
		return nil, nil
	}
	return m.cstr(what, s)
}

// strings copies ss into a C array of NUL-terminated strings (NULL when empty).
func (m *cmem) strings(what string, ss []string) (**C.char, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	arr := (*[1 << 28]*C.char)(m.alloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))[:len(ss):len(ss)]
	for i, s := range ss {
		p, err := m.cstr(what+" #"+strconv.Itoa(i), s)
		if err != nil {
			return nil, err
		}
		arr[i] = p
	}
	return &arr[0], nil
}

// texts copies ss into a C array of pointers and one of byte lengths.
func (m *cmem) texts(ss []string) (**C.char, *C.size_t) {
	if len(ss) == 0 {
		return nil, nil
	}
	ptrs := (*[1 << 28]*C.char)(m.alloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))[:len(ss):len(ss)]
	lens := (*[1 << 28]C.size_t)(m.alloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof(C.size_t(0)))))[:len(ss):len(ss)]
	for i, s := range ss {
		ptrs[i] = m.bytes(s)
		lens[i] = C.size_t(len(s))
	}
	return &ptrs[0], &lens[0]
}

// tokenRows copies rows of token ids into C arrays (pointers and lengths).
func (m *cmem) tokenRows(rows [][]int32) (**C.int32_t, *C.size_t) {
	if len(rows) == 0 {
		return nil, nil
	}
	ptrs := (*[1 << 28]*C.int32_t)(m.alloc(C.size_t(len(rows)) * C.size_t(unsafe.Sizeof((*C.int32_t)(nil)))))[:len(rows):len(rows)]
	lens := (*[1 << 28]C.size_t)(m.alloc(C.size_t(len(rows)) * C.size_t(unsafe.Sizeof(C.size_t(0)))))[:len(rows):len(rows)]
	for i, row := range rows {
		mem := m.alloc(C.size_t(len(row)) * 4)
		p := (*[1 << 28]C.int32_t)(mem)[:len(row):len(row)]
		for j, t := range row {
			p[j] = C.int32_t(t)
		}
		ptrs[i] = (*C.int32_t)(mem)
		lens[i] = C.size_t(len(row))
	}
	return &ptrs[0], &lens[0]
}

func (m *cmem) free() {
	for _, p := range m.ptrs {
		C.free(p)
	}
	m.ptrs = nil
}
