package parley

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// The transformers goldens the C, C++ and Rust suites use
// (tests/text_api/goldens.h), read from the header itself.
var goldensH = func() string {
	b, err := os.ReadFile("../../tests/text_api/goldens.h")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

func goldenDecl(t *testing.T, name string) string {
	t.Helper()
	start := strings.Index(goldensH, " "+name)
	if start < 0 {
		t.Fatalf("%s not in goldens.h", name)
	}
	rest := goldensH[start:]
	return rest[:strings.Index(rest, ";\n")]
}

// The strings of `static const char *const NAME[] = {...};` or `... NAME = "...";`
// (C string literals: octal escapes, \" and \\).
func goldenStrings(t *testing.T, name string) []string {
	decl := goldenDecl(t, name)
	var out []string
	for i := 0; i < len(decl); i++ {
		if decl[i] != '"' {
			continue
		}
		var b []byte
		for i++; decl[i] != '"'; {
			if decl[i] != '\\' {
				b = append(b, decl[i])
				i++
				continue
			}
			c := decl[i+1]
			if c >= '0' && c <= '7' {
				v, k := 0, 0
				for k < 3 && decl[i+1+k] >= '0' && decl[i+1+k] <= '7' {
					v = v*8 + int(decl[i+1+k]-'0')
					k++
				}
				b = append(b, byte(v))
				i += 1 + k
				continue
			}
			switch c {
			case 'n':
				b = append(b, '\n')
			case 't':
				b = append(b, '\t')
			default:
				b = append(b, c)
			}
			i += 2
		}
		out = append(out, string(b))
	}
	return out
}

func goldenFloats(t *testing.T, name string) []float32 {
	decl := goldenDecl(t, name)
	body := decl[strings.Index(decl, "{")+1 : strings.Index(decl, "}")]
	var out []float32
	for _, f := range strings.Split(body, ",") {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(f), "f"), 32)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, float32(v))
	}
	return out
}

func goldenDefine(t *testing.T, name string) int {
	rest := goldensH[strings.Index(goldensH, "#define "+name+" ")+len("#define "+name+" "):]
	v, err := strconv.Atoi(strings.Fields(rest)[0])
	if err != nil {
		t.Fatal(err)
	}
	return v
}
