package parley

// #include "parley_go.h"
import "C"

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Runtime is a parley_runtime: kernel threads, the kernel registry and the
// plugins. Safe for concurrent use, except Close.
type Runtime struct {
	p *C.parley_runtime
}

// RuntimeOptions are parley_runtime_options; the zero value holds the defaults.
type RuntimeOptions struct {
	NumThreads int      // kernel threads; 0: the CPUs available
	PluginDirs []string // searched first for libparley_*.so
	// OnlyPluginDirs: search PluginDirs only, not the default locations
	// (beside libparley, PARLEY_PLUGIN_PATH, built-in).
	OnlyPluginDirs bool
}

// NewRuntime creates a runtime (parley_runtime_create); o may be nil.
// Close it when done (a finalizer frees one that was forgotten).
func NewRuntime(o *RuntimeOptions) (*Runtime, error) {
	var m cmem
	defer m.free()
	ro := (*C.parley_runtime_options)(m.alloc(C.sizeof_parley_runtime_options))
	if err := call(func() C.parley_status { return C.parley_runtime_options_init(ro) }); err != nil {
		return nil, err
	}
	if o != nil {
		ro.num_threads = C.int32_t(o.NumThreads)
		dirs, err := m.strings("plugin dir", o.PluginDirs)
		if err != nil {
			return nil, err
		}
		ro.plugin_dirs = dirs
		ro.num_plugin_dirs = C.size_t(len(o.PluginDirs))
		if o.OnlyPluginDirs {
			ro.plugin_sources = C.PARLEY_PLUGINS_NONE
		}
	}
	var p *C.parley_runtime
	if err := call(func() C.parley_status { return C.parley_runtime_create(ro, &p) }); err != nil {
		return nil, err
	}
	r := &Runtime{p: p}
	runtime.SetFinalizer(r, (*Runtime).Close)
	return r, nil
}

// Close frees the runtime (models loaded from it stay usable). Closing
// twice is harmless; it must not race with other calls on the runtime.
func (r *Runtime) Close() error {
	if r != nil && r.p != nil {
		C.parley_runtime_free(r.p)
		r.p = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

func (r *Runtime) handle() *C.parley_runtime {
	if r == nil {
		return nil
	}
	return r.p // NULL once closed: Parley answers INVALID_ARGUMENT
}

// LoadPlugin loads one plugin library (parley_runtime_load_plugin).
func (r *Runtime) LoadPlugin(path string) error {
	var m cmem
	defer m.free()
	cpath, err := m.cstr("plugin path", path)
	if err != nil {
		return err
	}
	err = call(func() C.parley_status { return C.parley_runtime_load_plugin(r.handle(), cpath) })
	runtime.KeepAlive(r)
	return err
}

// Model is a parley_model: immutable after loading, safe for concurrent
// use by any number of goroutines, except Close.
type Model struct {
	p     *C.parley_model
	users atomic.Int64 // open chat sessions and requests of the model
}

// ModelOptions are parley_model_options; the zero value holds the defaults.
type ModelOptions struct {
	Device         string // "": "cpu"
	SkipChecksums  bool   // do not verify every tensor's checksum at load
	ReadIntoMemory bool   // read the file into memory instead of mapping it
}

func (m *cmem) model(o *ModelOptions) (*C.parley_model_options, error) {
	mo := (*C.parley_model_options)(m.alloc(C.sizeof_parley_model_options))
	if err := call(func() C.parley_status { return C.parley_model_options_init(mo) }); err != nil {
		return nil, err
	}
	if o == nil {
		return mo, nil
	}
	var err error
	if o.Device != "" {
		if mo.device, err = m.cstr("Device", o.Device); err != nil {
			return nil, err
		}
	}
	if o.SkipChecksums {
		mo.verify_checksums = 0
	}
	mo.read_into_memory = b2i(o.ReadIntoMemory)
	return mo, nil
}

func newModel(p *C.parley_model) *Model {
	model := &Model{p: p}
	runtime.SetFinalizer(model, (*Model).Close)
	return model
}

// LoadModel loads a model file (parley_model_load_file); o may be nil.
func LoadModel(rt *Runtime, path string, o *ModelOptions) (*Model, error) {
	var m cmem
	defer m.free()
	mo, err := m.model(o)
	if err != nil {
		return nil, err
	}
	cpath, err := m.cstr("model path", path)
	if err != nil {
		return nil, err
	}
	var p *C.parley_model
	err = call(func() C.parley_status { return C.parley_model_load_file(rt.handle(), cpath, mo, &p) })
	runtime.KeepAlive(rt)
	if err != nil {
		return nil, err
	}
	return newModel(p), nil
}

// LoadModelMemory loads a model from bytes (copied; parley_model_load_memory).
func LoadModelMemory(rt *Runtime, data []byte, o *ModelOptions) (*Model, error) {
	var m cmem
	defer m.free()
	mo, err := m.model(o)
	if err != nil {
		return nil, err
	}
	mo.borrow_memory = 0
	var p *C.parley_model
	var ptr unsafe.Pointer
	if len(data) > 0 {
		ptr = unsafe.Pointer(&data[0]) // pointer-free Go memory, read during the call only
	}
	err = call(func() C.parley_status {
		return C.parley_model_load_memory(rt.handle(), ptr, C.size_t(len(data)), mo, &p)
	})
	runtime.KeepAlive(rt)
	runtime.KeepAlive(data)
	if err != nil {
		return nil, err
	}
	return newModel(p), nil
}

// Close frees the model. While chat sessions or requests of the model are
// open it frees nothing and returns ErrBusy (in C the model must outlive
// them); they also keep it reachable, so its finalizer never runs under
// them. Closing twice is harmless.
func (model *Model) Close() error {
	if model == nil || model.p == nil {
		return nil
	}
	if n := model.users.Load(); n > 0 {
		return errorf(StatusBusy, "the model has %d open chat sessions or requests: close them first", n)
	}
	C.parley_model_free(model.p)
	model.p = nil
	runtime.SetFinalizer(model, nil)
	return nil
}

func (model *Model) handle() *C.parley_model {
	if model == nil {
		return nil
	}
	return model.p
}

// Architecture is the Hugging Face class name, e.g. "MarianMTModel".
func (model *Model) Architecture() (string, error) {
	var info C.parley_model_info
	info.struct_size = C.sizeof_parley_model_info
	err := call(func() C.parley_status { return C.parley_model_get_info(model.handle(), &info) })
	var arch string
	if err == nil {
		arch = C.GoString(info.architecture)
	}
	runtime.KeepAlive(model)
	return arch, err
}

// VerifyTensor checks one tensor's checksum now (parley_model_verify_tensor).
func (model *Model) VerifyTensor(name string) error {
	var m cmem
	defer m.free()
	cname, err := m.cstr("tensor name", name)
	if err != nil {
		return err
	}
	err = call(func() C.parley_status { return C.parley_model_verify_tensor(model.handle(), cname) })
	runtime.KeepAlive(model)
	return err
}

// Tokenize encodes text with the model's (source) tokenizer, adding its
// special tokens (parley_tokenize_n with PARLEY_TOKENIZE_ADD_SPECIAL).
func (model *Model) Tokenize(text string) ([]int32, error) {
	var m cmem
	defer m.free()
	ctext := m.bytes(text)
	var n C.size_t
	err := call(func() C.parley_status {
		return C.parley_tokenize_n(model.handle(), ctext, C.size_t(len(text)), C.PARLEY_TOKENIZE_ADD_SPECIAL, nil, nil, 0, &n)
	})
	if err != nil {
		return nil, err
	}
	ids := make([]int32, int(n))
	if n > 0 {
		buf := (*C.int32_t)(m.alloc(n * 4))
		err = call(func() C.parley_status {
			return C.parley_tokenize_n(model.handle(), ctext, C.size_t(len(text)), C.PARLEY_TOKENIZE_ADD_SPECIAL, nil, buf, n, &n)
		})
		if err != nil {
			return nil, err
		}
		copy(ids, unsafe.Slice((*int32)(unsafe.Pointer(buf)), int(n)))
	}
	runtime.KeepAlive(model)
	return ids, nil
}

// GenerationOptions are the model's generation defaults
// (parley_generation_options_init), to change and pass to Generate,
// Translate (TranslationOptions.Generation) or chat (ChatOptions.Generation).
func (model *Model) GenerationOptions() (*GenerationOptions, error) {
	var m cmem
	defer m.free()
	g, err := m.generation(model.handle(), nil)
	runtime.KeepAlive(model)
	if err != nil {
		return nil, err
	}
	return generationFromC(g), nil
}
