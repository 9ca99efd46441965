"""A faithful host shim: the CUDA C kernels of ``kernels/cuda/*.cu`` run on the CPU.

``HostModule(code, options)`` takes exactly what ``scratchnet.kernels.cuda.compiler``
hands NVRTC (:func:`~scratchnet.kernels.cuda.compiler.kernel_source` and
:func:`~scratchnet.kernels.cuda.compiler.compile_options`), compiles it with g++ for
the host and is called like ``cupy.RawModule``::

    module = HostModule(code, options)
    module.get_function("im2col")((grid,), (256,), (x, cols, numpy.int64(N), ...))

How a launch runs
-----------------
* Every block of the grid and every thread of a block runs, with the real
  ``threadIdx``, ``blockIdx``, ``blockDim`` and ``gridDim``.
* Each CUDA thread is a *fiber* (its own small stack) on the calling OS
  thread; a scheduler switches between them. Up to 2,048 threads (whole
  blocks) are resident at once, as on one GPU multiprocessor, and blocks
  start in a shuffled order.
* ``__syncthreads()`` is a real barrier: a fiber that reaches it is parked
  until every thread of its block has arrived. A barrier some threads never
  reach (they returned) is reported, not silently passed.
* ``__shared__`` memory exists once per block: static arrays live in a
  linker section whose contents the scheduler swaps when it moves from one
  block to another, and ``extern __shared__`` arrays point at a per-block
  buffer of ``shared_mem`` bytes. Both start filled with 0xFF bytes (NaN for
  floats), so a read of shared memory nobody wrote shows up.
* The atomics (``atomicAdd`` on int, unsigned, unsigned long long, float and
  double; ``atomicCAS``, ``atomicExch``, ``atomicMax``, ``atomicMin``) are
  GCC ``__atomic`` builtins, float and double by compare-and-swap.

Races are made observable
-------------------------
A sanitized launch runs a build of the kernel compiled with g++'s
ThreadSanitizer *instrumentation* but without its runtime: every load and
store the kernel makes calls a hook in this shim's runtime, which

* **interleaves**: before an access the running thread gives way to another
  ready thread with probability ``preempt``, the next one chosen by a seeded
  generator. A plain ``+=`` that races loses updates; a missing barrier lets
  a thread read what its neighbour has not written yet. Same seed, same
  schedule, same result: the tests are deterministic.
* **checks bounds**: each access must fall in an argument array (a write
  only in one the kernel's signature does not declare ``const``), in the
  block's shared memory or on the thread's own stack; anything else stops
  the launch with the thread, block, address and size.
* **detects races** (``detect_races=True``): two threads touching one
  address, at least one writing, without a barrier of their block ordering
  them, stop the launch and name both threads and the array element. This is
  what catches a race whose answer is right by luck, e.g. a grid-stride loop
  that lost ``gridDim.x`` and writes every element several times.

A plain launch runs a build without the hooks: threads switch only at
barriers, in a shuffled order, with no bounds or race checks (about 0.5 us a
thread, against 2 us sanitized). ``sanitize="auto"``, the default, sanitizes
the launches of at most 65,536 threads (every test-sized one) and runs the
larger ones plain, so a training step on the stand-in stays quick.

Arguments are checked as a GPU cannot: their number, and each type against
the kernel's C signature (an ``np.int32`` for an ``index_t``, or a Python
int, is a ``TypeError``, where CuPy would pass four bytes of the wrong size).

Not modelled: warps (no ``__shfl*``, ``__syncwarp``, ballots: a kernel that
uses them does not compile here), memory fences and the weak memory model
(the interleaving is sequentially consistent), ``__constant__`` and
``__device__`` globals, and streams (a launch completes before it returns).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

# Bump when the runtime or the prelude changes: it is part of every cache key.
SHIM_VERSION = "1"

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = ((1 << 31) - 1, 65535, 65535)
# Shared memory a block may use without an opt-in attribute, as on every GPU since Kepler.
MAX_SHARED_BYTES = 48 * 1024
# sanitize="auto" checks launches of at most this many threads (at about 2 us a
# thread); larger ones (a training step's im2col) run the plain build.
SANITIZE_THREADS = 1 << 16


class ShimFault(RuntimeError):
    """A kernel did something a GPU would not forgive: an access out of
    bounds, a data race, a barrier not every thread reached."""


# --- the code the kernels are compiled against ------------------------------

# Included before every kernel source (g++ -include). The kernel is compiled
# as C++; everything CUDA-specific is a macro or a call into the runtime.
PRELUDE = r"""
// scratchnet host shim: the CUDA vocabulary for g++ (see tests/cuda_host.py).
#include <cmath>
#include <cstddef>
#include <utility>
#include <type_traits>
using namespace std;  // exp(float) is expf, as in device code

#define __global__ __attribute__((noinline))
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per module, in a section of its own: the runtime swaps its
// contents per block. (extern __shared__ is rewritten before compiling.)
#define __shared__ static __attribute__((section("shim_shared")))

struct dim3 { unsigned x, y, z; };

extern "C" {
dim3 shim_thread_idx(void);
dim3 shim_block_idx(void);
dim3 shim_block_dim(void);
dim3 shim_grid_dim(void);
void shim_syncthreads(void);
void* shim_dynamic_shared(void);
}
#define threadIdx (shim_thread_idx())
#define blockIdx (shim_block_idx())
#define blockDim (shim_block_dim())
#define gridDim (shim_grid_dim())
#define __syncthreads() shim_syncthreads()

// Atomics live in the runtime (uninstrumented, indivisible).
int atomicAdd(int*, int);
unsigned atomicAdd(unsigned*, unsigned);
unsigned long long atomicAdd(unsigned long long*, unsigned long long);
float atomicAdd(float*, float);
double atomicAdd(double*, double);
int atomicCAS(int*, int, int);
unsigned atomicCAS(unsigned*, unsigned, unsigned);
unsigned long long atomicCAS(unsigned long long*, unsigned long long, unsigned long long);
int atomicExch(int*, int);
unsigned atomicExch(unsigned*, unsigned);
unsigned long long atomicExch(unsigned long long*, unsigned long long);
float atomicExch(float*, float);
int atomicMax(int*, int);
unsigned atomicMax(unsigned*, unsigned);
long long atomicMax(long long*, long long);
unsigned long long atomicMax(unsigned long long*, unsigned long long);
int atomicMin(int*, int);
unsigned atomicMin(unsigned*, unsigned);
long long atomicMin(long long*, long long);
unsigned long long atomicMin(unsigned long long*, unsigned long long);

// --- the export of each kernel: an entry the runtime calls, and its signature.
// Not instrumented: they read the argument block, which is the shim's own.
#define SHIM_UNCHECKED __attribute__((no_sanitize_thread))

template <class T> struct shim_code { static constexpr const char* c = "?unknown"; };
#define SHIM_CODE(T, s) template <> struct shim_code<T> { static constexpr const char* c = s; };
SHIM_CODE(float, "f") SHIM_CODE(double, "d") SHIM_CODE(bool, "?") SHIM_CODE(char, "b")
SHIM_CODE(signed char, "b") SHIM_CODE(unsigned char, "B") SHIM_CODE(short, "h")
SHIM_CODE(unsigned short, "H") SHIM_CODE(int, "i") SHIM_CODE(unsigned, "I")
SHIM_CODE(long, "l") SHIM_CODE(unsigned long, "L") SHIM_CODE(long long, "q")
SHIM_CODE(unsigned long long, "Q") SHIM_CODE(void, "v")

// One parameter: "f" for a float, "*f" for float*, "const*f" for const float*.
template <class A> SHIM_UNCHECKED void shim_describe(char*& out, const char* end) {
    const char* parts[3] = {"", "", ""};
    if constexpr (std::is_pointer<A>::value) {
        using P = typename std::remove_pointer<A>::type;
        parts[0] = std::is_const<P>::value ? "const*" : "*";
        parts[1] = shim_code<typename std::remove_cv<P>::type>::c;
    } else {
        parts[1] = shim_code<typename std::remove_cv<A>::type>::c;
    }
    parts[2] = ",";
    for (const char* p : parts)
        for (; *p && out < end; ++p) *out++ = *p;
}

template <class... A> SHIM_UNCHECKED void shim_signature(void (*)(A...), char* out, size_t n) {
    const char* end = out + n - 1;
    (shim_describe<A>(out, end), ...);
    *out = 0;
}

template <class... A, size_t... I>
SHIM_UNCHECKED void shim_invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(args[I])...);
}

template <class... A> SHIM_UNCHECKED void shim_invoke(void (*kernel)(A...), void** args) {
    shim_invoke(kernel, args, std::index_sequence_for<A...>{});
}

#define SHIM_EXPORT(name)                                                                   \
    extern "C" SHIM_UNCHECKED void shim_entry_##name(void** args) { shim_invoke(name, args); } \
    extern "C" SHIM_UNCHECKED void shim_signature_##name(char* out, size_t n) {             \
        shim_signature(name, out, n);                                                       \
    }

// The module's static shared memory: the linker's bounds of its section
// (weak: a module without __shared__ arrays has no such section).
extern "C" __attribute__((weak)) char __start_shim_shared[], __stop_shim_shared[];
#define SHIM_MODULE_FOOTER                                                                  \
    extern "C" SHIM_UNCHECKED void shim_static_shared(char** lo, char** hi) {               \
        *lo = __start_shim_shared;                                                          \
        *hi = __stop_shim_shared;                                                           \
    }
"""

# The scheduler, the barrier, the atomics and the access hooks; compiled once
# into a shared library every kernel module links against.
RUNTIME = r"""
// scratchnet host shim runtime (see tests/cuda_host.py for the design).
#include <cstdint>
#include <cstdio>
#include <cstdarg>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

struct dim3 { unsigned x, y, z; };

// One argument array, or shared memory: what an access may touch.
struct Region {
    uintptr_t lo, hi;
    int writable;
    int arg;        // argument number, for messages
    int itemsize;   // element size, for messages
};

// What Python asks for (mirrored by _LaunchSpec in tests/cuda_host.py).
struct LaunchSpec {
    void (*entry)(void**);
    void** args;
    const char* name;
    unsigned grid[3], block[3];
    unsigned long long dynamic_shared;
    const Region* regions;
    int nregions;
    char* static_lo;
    char* static_hi;
    unsigned long long seed;
    double preempt;
    int detect_races;
};

namespace {

enum State { READY, AT_BARRIER, DONE };

struct Block;

struct Thread {
    void* sp;             // saved stack pointer while switched out
    char* stack_lo;
    char* stack_hi;
    dim3 idx;
    unsigned long long id;  // global: block number * threads per block + thread number
    State state;
    Block* block;
#if !defined(__x86_64__)
    ucontext_t ctx;
#endif
};

// The last plain accesses to one address, for the race detector.
struct Shadow {
    long long writer = -1, reader = -1, reader2 = -1;
    unsigned writer_epoch = 0, reader_epoch = 0, reader2_epoch = 0;
};

struct Block {
    dim3 idx;
    unsigned long long number;
    unsigned waiting = 0, exited = 0;
    unsigned epoch = 0;                      // barriers passed
    std::vector<Thread> threads;
    std::vector<char> static_copy;           // this block's static shared memory, while swapped out
    std::vector<char> dynamic;               // extern __shared__
    std::unordered_map<uintptr_t, Shadow> shadow;  // its shared-memory accesses
    bool running = false;
};

// --- fibers -------------------------------------------------------------

const size_t STACK = 128 * 1024, GUARD = 4096;

#if defined(__x86_64__)
// Save the callee-saved registers on this stack, store the stack pointer in
// *save, switch to the stack `next` and pop its registers: a function call
// that returns on another fiber.
extern "C" void shim_switch(void** save, void* next) __attribute__((visibility("hidden")));
asm(R"(
    .text
    .globl shim_switch
    .hidden shim_switch
    .type shim_switch, @function
shim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size shim_switch, .-shim_switch
)");
#endif

struct Launch {
    const LaunchSpec* spec = nullptr;
    unsigned tpb = 0;                       // threads per block
    unsigned long long nblocks = 0;
    std::vector<Block> slots;               // resident blocks
    std::vector<unsigned long long> order;  // block numbers in start order
    unsigned long long next_block = 0;
    std::vector<Thread*> ready;
    Thread* current = nullptr;
    Block* loaded = nullptr;                // whose static shared memory is in the section
    void* scheduler_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t scheduler_ctx;
#endif
    unsigned long long rng = 0;
    std::unordered_map<uintptr_t, Shadow> global_shadow;
    char error[2048];
    bool failed = false;
};

Launch L;
std::mutex launch_lock;  // one launch at a time (the state above is global)
std::vector<char*> stacks;

unsigned long long next_random() {  // SplitMix64
    unsigned long long z = (L.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void ensure_stacks(size_t n) {
    while (stacks.size() < n) {
        size_t count = n - stacks.size();
        size_t each = STACK + GUARD;
        char* p = static_cast<char*>(mmap(nullptr, count * each, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        if (p == MAP_FAILED) { perror("cuda_host: mmap"); abort(); }
        for (size_t i = 0; i < count; ++i) {
            mprotect(p + i * each, GUARD, PROT_NONE);  // a stack overflow faults, it does not corrupt
            stacks.push_back(p + i * each + GUARD);
        }
    }
}

void fail(const char* fmt, ...) {
    if (L.failed) return;
    L.failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L.error, sizeof L.error, fmt, ap);
    va_end(ap);
}

// Back to the scheduler; the thread's state says why.
void switch_to_scheduler(Thread* t) {
#if defined(__x86_64__)
    shim_switch(&t->sp, L.scheduler_sp);
#else
    swapcontext(&t->ctx, &L.scheduler_ctx);
#endif
}

[[noreturn]] void stop_thread(Thread* t) {  // after a fault: never resumed
    t->state = DONE;
    switch_to_scheduler(t);
    __builtin_unreachable();
}

void fiber_main() {
    Thread* t = L.current;
    if (!L.failed) L.spec->entry(L.spec->args);
    t->state = DONE;
    switch_to_scheduler(t);
    __builtin_unreachable();
}

void start_block(Block& b, unsigned long long number, size_t slot) {
    const unsigned gx = L.spec->grid[0], gy = L.spec->grid[1];
    const unsigned bx = L.spec->block[0], by = L.spec->block[1];
    b.number = number;
    b.idx = {unsigned(number % gx), unsigned(number / gx % gy), unsigned(number / gx / gy)};
    b.waiting = b.exited = b.epoch = 0;
    b.running = true;
    b.shadow.clear();
    // Shared memory starts as garbage: NaN for floats, -1 for integers.
    b.static_copy.assign(L.spec->static_hi - L.spec->static_lo, char(0xFF));
    b.dynamic.assign(L.spec->dynamic_shared, char(0xFF));
    if (L.loaded == &b) L.loaded = nullptr;  // the section holds its previous block
    b.threads.resize(L.tpb);
    for (unsigned i = 0; i < L.tpb; ++i) {
        Thread& t = b.threads[i];
        t.idx = {i % bx, i / bx % by, i / bx / by};
        t.id = number * L.tpb + i;
        t.state = READY;
        t.block = &b;
        t.stack_lo = stacks[slot * L.tpb + i];
        t.stack_hi = t.stack_lo + STACK;
#if defined(__x86_64__)
        // A fresh stack that shim_switch "returns" into fiber_main from.
        void** top = reinterpret_cast<void**>(t.stack_hi);
        *--top = nullptr;                                  // fiber_main's return address: never used
        *--top = reinterpret_cast<void*>(&fiber_main);      // popped by ret
        for (int r = 0; r < 6; ++r) *--top = nullptr;      // rbp, rbx, r12-r15
        t.sp = top;
#else
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = t.stack_lo;
        t.ctx.uc_stack.ss_size = STACK;
        t.ctx.uc_link = nullptr;
        makecontext(&t.ctx, fiber_main, 0);
#endif
        L.ready.push_back(&t);
    }
}

void load_static_shared(Block* b) {
    const size_t n = L.spec->static_hi - L.spec->static_lo;
    if (n == 0 || L.loaded == b) return;
    if (L.loaded) memcpy(L.loaded->static_copy.data(), L.spec->static_lo, n);
    memcpy(L.spec->static_lo, b->static_copy.data(), n);
    L.loaded = b;
}

void after_switch(Thread* t) {
    Block& b = *t->block;
    if (t->state == READY) {
        L.ready.push_back(t);
    } else if (t->state == DONE) {
        b.exited++;
    }
    if (L.failed) return;
    if (b.waiting > 0 && b.waiting + b.exited == L.tpb) {
        if (b.exited > 0) {
            fail("%s: block (%u,%u,%u): %u threads wait at __syncthreads() that %u threads of the "
                 "block returned without reaching (a barrier in divergent code)",
                 L.spec->name, b.idx.x, b.idx.y, b.idx.z, b.waiting, b.exited);
            return;
        }
        b.waiting = 0;
        b.epoch++;
        for (Thread& u : b.threads) {
            u.state = READY;
            L.ready.push_back(&u);
        }
    }
    if (b.exited == L.tpb) {
        b.running = false;
        if (L.next_block < L.nblocks) start_block(b, L.order[L.next_block++], &b - L.slots.data());
    }
}

void run_scheduler() {
    while (!L.ready.empty() && !L.failed) {
        size_t k = next_random() % L.ready.size();
        Thread* t = L.ready[k];
        L.ready[k] = L.ready.back();
        L.ready.pop_back();
        load_static_shared(t->block);
        L.current = t;
#if defined(__x86_64__)
        shim_switch(&L.scheduler_sp, t->sp);
#else
        swapcontext(&L.scheduler_ctx, &t->ctx);
#endif
        L.current = nullptr;
        after_switch(t);
    }
    if (L.loaded) {  // keep the section's contents as the last block left them
        L.loaded = nullptr;
    }
}

// --- memory accesses (sanitize=True) ----------------------------------------

bool ordered(long long a, unsigned a_epoch, long long b, unsigned b_epoch) {
    // Does access a (by thread a in its block's epoch a_epoch) happen before
    // access b? Only in one thread, or across a barrier of one block.
    if (a == b) return true;
    return a / L.tpb == b / L.tpb && a_epoch < b_epoch;
}

void describe_thread(char* out, size_t n, long long id) {  // only when reporting
    const unsigned gx = L.spec->grid[0], gy = L.spec->grid[1];
    const unsigned bx = L.spec->block[0], by = L.spec->block[1];
    unsigned long long blk = id / L.tpb, thr = id % L.tpb;
    snprintf(out, n, "thread (%llu,%llu,%llu) of block (%llu,%llu,%llu)", thr % bx, thr / bx % by,
             thr / bx / by, blk % gx, blk / gx % gy, blk / gx / gy);
}

// Where an access went: an argument (r) or shared memory (space, offset).
struct Place {
    const Region* r;
    const char* space;
    uintptr_t addr;
};

void describe(char* out, size_t n, const Place& p) {
    if (p.r) {
        snprintf(out, n, "argument %d, element %llu", p.r->arg,
                 (unsigned long long)((p.addr - p.r->lo) / (p.r->itemsize ? p.r->itemsize : 1)));
    } else {
        snprintf(out, n, "%s shared memory, byte %llu", p.space, (unsigned long long)p.addr);
    }
}

void race(const char* kind, long long other, long long me, const Place& p) {
    char a[128], b[128], where[160];
    describe_thread(a, sizeof a, other);
    describe_thread(b, sizeof b, me);
    describe(where, sizeof where, p);
    fail("%s: data race (%s) on %s: %s and %s, with no __syncthreads() of one block between them",
         L.spec->name, kind, where, a, b);
}

void check_race(Shadow& s, bool write, Thread* t, const Place& where) {
    const long long me = t->id;
    const unsigned e = t->block->epoch;
    if (s.writer >= 0 && !ordered(s.writer, s.writer_epoch, me, e)) {
        race(write ? "write after write" : "read after write", s.writer, me, where);
        return;
    }
    if (write) {
        if (s.reader >= 0 && !ordered(s.reader, s.reader_epoch, me, e)) {
            race("write after read", s.reader, me, where);
            return;
        }
        if (s.reader2 >= 0 && !ordered(s.reader2, s.reader2_epoch, me, e)) {
            race("write after read", s.reader2, me, where);
            return;
        }
        s.writer = me;
        s.writer_epoch = e;
        s.reader = s.reader2 = -1;
    } else if (s.reader == me || s.reader < 0) {
        s.reader = me;
        s.reader_epoch = e;
    } else if (s.reader2 == me || s.reader2 < 0 || ordered(s.reader2, s.reader2_epoch, me, e)) {
        s.reader2 = me;
        s.reader2_epoch = e;
    } else if (ordered(s.reader, s.reader_epoch, me, e)) {
        s.reader = me;
        s.reader_epoch = e;
    }  // else: two other concurrent readers are kept; either one conflicts with a later write
}

void maybe_yield(Thread* t) {
    if (L.spec->preempt <= 0) return;
    if ((next_random() >> 11) * 0x1.0p-53 >= L.spec->preempt) return;
    t->state = READY;
    switch_to_scheduler(t);
}

void access(void* addr, size_t size, bool write) {
    Thread* t = L.current;
    if (!t) return;  // not inside a launch
    const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    if (a >= uintptr_t(t->stack_lo) && a + size <= uintptr_t(t->stack_hi)) return;  // its own stack
    Block& b = *t->block;
    const uintptr_t slo = uintptr_t(L.spec->static_lo), shi = uintptr_t(L.spec->static_hi);
    const uintptr_t dlo = uintptr_t(b.dynamic.data()), dhi = dlo + b.dynamic.size();
    std::unordered_map<uintptr_t, Shadow>* shadow = nullptr;
    Place place = {nullptr, nullptr, 0};
    if (a >= slo && a + size <= shi) {
        place = {nullptr, "static", a - slo};
        shadow = &b.shadow;
    } else if (a >= dlo && a + size <= dhi) {
        place = {nullptr, "dynamic (extern)", a - dlo};
        shadow = &b.shadow;
    } else {
        const Region* r = nullptr;
        for (int i = 0; i < L.spec->nregions; ++i) {
            const Region& c = L.spec->regions[i];
            if (a >= c.lo && a + size <= c.hi) { r = &c; break; }
        }
        if (!r || (write && !r->writable)) {
            char who[128], where[160];
            describe_thread(who, sizeof who, t->id);
            if (!r) {
                fail("%s: %s %s %zu bytes at %p, outside every argument array, the block's shared "
                     "memory (%llu static + %llu dynamic bytes) and its stack",
                     L.spec->name, who, write ? "writes" : "reads", size, addr,
                     (unsigned long long)(shi - slo), (unsigned long long)(dhi - dlo));
            } else {
                describe(where, sizeof where, {r, nullptr, a});
                fail("%s: %s writes %s, a const (or read-only) argument", L.spec->name, who, where);
            }
            stop_thread(t);
        }
        place = {r, nullptr, a};
        if (r->writable) shadow = &L.global_shadow;
    }
    if (shadow && L.spec->detect_races) {
        check_race((*shadow)[a], write, t, place);
        if (L.failed) stop_thread(t);
    }
    maybe_yield(t);
}

template <class T, class F> T atomic_update(T* p, F f) {
    Thread* t = L.current;
    if (t && L.spec->preempt > 0) maybe_yield(t);  // a switch point before, never inside
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, f(old), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

template <class T> T cas(T* p, T expected, T desired) {
    Thread* t = L.current;
    if (t && L.spec->preempt > 0) maybe_yield(t);
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;  // the old value either way
}

// Float and double have no integer compare-and-swap: swap their bits.
template <class T, class U> T float_update(T* p, T v, bool exchange) {
    U* q = reinterpret_cast<U*>(p);
    U bits = atomic_update(q, [&](U old) {
        T x;
        memcpy(&x, &old, sizeof x);
        T y = exchange ? v : x + v;
        U out;
        memcpy(&out, &y, sizeof out);
        return out;
    });
    T old;
    memcpy(&old, &bits, sizeof old);
    return old;
}

}  // namespace

// --- what the kernels call --------------------------------------------------

extern "C" dim3 shim_thread_idx(void) { return L.current->idx; }
extern "C" dim3 shim_block_idx(void) { return L.current->block->idx; }
extern "C" dim3 shim_block_dim(void) { return {L.spec->block[0], L.spec->block[1], L.spec->block[2]}; }
extern "C" dim3 shim_grid_dim(void) { return {L.spec->grid[0], L.spec->grid[1], L.spec->grid[2]}; }
extern "C" void* shim_dynamic_shared(void) { return L.current->block->dynamic.data(); }

extern "C" void shim_syncthreads(void) {
    Thread* t = L.current;
    t->state = AT_BARRIER;
    t->block->waiting++;
    switch_to_scheduler(t);
}

#define SHIM_INT_ATOMICS(T)                                                                    \
    T atomicAdd(T* p, T v) { return atomic_update(p, [v](T o) { return static_cast<T>(o + v); }); }         \
    T atomicExch(T* p, T v) { return atomic_update(p, [v](T) { return v; }); }                 \
    T atomicCAS(T* p, T e, T d) { return cas(p, e, d); }
SHIM_INT_ATOMICS(int)
SHIM_INT_ATOMICS(unsigned)
SHIM_INT_ATOMICS(unsigned long long)
#define SHIM_MINMAX(T)                                                                         \
    T atomicMax(T* p, T v) { return atomic_update(p, [v](T o) { return o > v ? o : v; }); }   \
    T atomicMin(T* p, T v) { return atomic_update(p, [v](T o) { return o < v ? o : v; }); }
SHIM_MINMAX(int)
SHIM_MINMAX(unsigned)
SHIM_MINMAX(long long)
SHIM_MINMAX(unsigned long long)
float atomicAdd(float* p, float v) { return float_update<float, unsigned>(p, v, false); }
double atomicAdd(double* p, double v) { return float_update<double, unsigned long long>(p, v, false); }
float atomicExch(float* p, float v) { return float_update<float, unsigned>(p, v, true); }

// ThreadSanitizer's instrumentation calls these before each load and store
// of a kernel compiled with -fsanitize=thread (sanitize=True).
#define SHIM_HOOKS(n)                                                                          \
    extern "C" void __tsan_read##n(void* a) { access(a, n, false); }                           \
    extern "C" void __tsan_write##n(void* a) { access(a, n, true); }                           \
    extern "C" void __tsan_unaligned_read##n(void* a) { access(a, n, false); }                 \
    extern "C" void __tsan_unaligned_write##n(void* a) { access(a, n, true); }
SHIM_HOOKS(1)
SHIM_HOOKS(2)
SHIM_HOOKS(4)
SHIM_HOOKS(8)
SHIM_HOOKS(16)
extern "C" void __tsan_read_range(void* a, unsigned long n) { access(a, n, false); }
extern "C" void __tsan_write_range(void* a, unsigned long n) { access(a, n, true); }
extern "C" void __tsan_init(void) {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit(void) {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}

// --- the launch ---------------------------------------------------------------

extern "C" int shim_launch(const LaunchSpec* spec, char* error, size_t error_len) {
    std::lock_guard<std::mutex> hold(launch_lock);
    L.spec = spec;
    L.tpb = spec->block[0] * spec->block[1] * spec->block[2];
    L.nblocks = (unsigned long long)spec->grid[0] * spec->grid[1] * spec->grid[2];
    L.failed = false;
    L.error[0] = 0;
    L.rng = spec->seed;
    L.ready.clear();
    L.global_shadow.clear();
    L.loaded = nullptr;
    L.current = nullptr;
    // Whole blocks resident at once, up to 2,048 threads, as on one multiprocessor.
    unsigned long long resident = 2048 / L.tpb;
    if (resident < 1) resident = 1;
    if (resident > L.nblocks) resident = L.nblocks;
    ensure_stacks(resident * L.tpb);
    // Blocks start in a shuffled order (a GPU promises none).
    L.order.resize(L.nblocks);
    for (unsigned long long i = 0; i < L.nblocks; ++i) L.order[i] = i;
    for (unsigned long long i = L.nblocks; i > 1; --i) std::swap(L.order[i - 1], L.order[next_random() % i]);
    L.slots.clear();
    L.slots.resize(resident);
    L.next_block = 0;
    for (size_t s = 0; s < resident; ++s) start_block(L.slots[s], L.order[L.next_block++], s);
    run_scheduler();
    if (!L.failed) {
        for (Block& b : L.slots) {
            if (b.running) {
                fail("%s: block (%u,%u,%u) never finished (%u threads wait at a barrier)", spec->name,
                     b.idx.x, b.idx.y, b.idx.z, b.waiting);
                break;
            }
        }
    }
    L.global_shadow.clear();
    L.spec = nullptr;
    snprintf(error, error_len, "%s", L.error);
    return L.failed ? 1 : 0;
}
"""


# --- building -------------------------------------------------------------------

_build_lock = threading.Lock()


def _cache_dir():
    root = os.environ.get("SCRATCHNET_CUDA_HOST_CACHE")
    path = Path(root) if root else Path(tempfile.gettempdir()) / f"scratchnet-cuda-host-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _gxx():
    gxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if gxx is None:
        raise FileNotFoundError("cuda_host: g++ is not on PATH")
    return gxx


def _compile(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cuda_host: {what} failed to compile:\n{proc.stderr}{proc.stdout}")


def _key(*parts):
    h = hashlib.sha256(SHIM_VERSION.encode())
    for p in parts:
        h.update(b"\0" + (p if isinstance(p, bytes) else str(p).encode()))
    return h.hexdigest()[:24]


def _atomic_write_target(path):
    # Build to a private name, then rename: concurrent test workers never load a half-written file.
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")


def _runtime():
    """The runtime library (built once per shim version)."""
    cache = _cache_dir()
    gxx = _gxx()
    lib = cache / f"libcuda_host_runtime-{_key(RUNTIME, gxx)}.so"
    if not lib.exists():
        src = cache / f"runtime-{os.getpid()}.cpp"
        src.write_text(RUNTIME)
        tmp = _atomic_write_target(lib)
        _compile([gxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-o", str(tmp), str(src)], "the runtime")
        os.replace(tmp, lib)
        src.unlink()
    return lib


def _host_options(options):
    """NVRTC options -> g++ options: macros, include folders and the language
    standard carry over; code-generation flags (-arch, -ftz, --use_fast_math,
    -lineinfo, ...) mean nothing on the host and are dropped."""
    out = []
    for opt in options:
        if opt.startswith(("-D", "-U", "-I")):
            out.append(opt)
        elif opt.startswith(("-std=", "--std=")):
            out.append("-std=" + opt.split("=", 1)[1])
    return out


def _header_digest(options):
    """The headers the -I folders hold: they are part of what is compiled, so of the key."""
    h = hashlib.sha256()
    for opt in options:
        if opt.startswith("-I"):
            folder = Path(opt[2:])
            for f in sorted(folder.glob("*")) if folder.is_dir() else ():
                if f.suffix in (".cuh", ".h", ".hpp", ".inc"):
                    h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s*)?([\w\s]+?)\s+(\w+)\s*\[\s*\]\s*;")


def kernel_names(code):
    """The ``extern "C" __global__`` kernels of ``code``, in order."""
    return _KERNEL.findall(code)


def host_source(code):
    """The translation unit g++ compiles: the kernel source, with ``extern
    __shared__ T name[];`` made a pointer to the block's dynamic shared memory
    (same line, so compiler messages keep their line numbers), then one export
    per kernel."""
    code = _EXTERN_SHARED.sub(r"\1* const \2 = (\1*)shim_dynamic_shared();", code)
    exports = "".join(f"SHIM_EXPORT({name})\n" for name in kernel_names(code))
    return f"{code}\n#line 1 \"<cuda_host exports>\"\n{exports}SHIM_MODULE_FOOTER\n"


def build(code, options=(), sanitize=True):
    """Compile ``code`` for the host; the path of the shared library (cached)."""
    with _build_lock:
        runtime = _runtime()
        gxx = _gxx()
        host_opts = _host_options(options)
        key = _key(code, "\0".join(options), _header_digest(options), sanitize, gxx, PRELUDE, runtime.name)
        cache = _cache_dir()
        lib = cache / f"module-{key}.so"
        if lib.exists():
            return lib
        prelude = cache / f"prelude-{_key(PRELUDE)}.h"
        if not prelude.exists():
            tmp = _atomic_write_target(prelude)
            tmp.write_text(PRELUDE)
            os.replace(tmp, prelude)
        src = cache / f"module-{key}.{os.getpid()}.cpp"
        obj = src.with_suffix(".o")
        src.write_text(host_source(code))
        std = [] if any(o.startswith("-std=") for o in host_opts) else ["-std=c++17"]
        instrument = ["-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0"] if sanitize else []
        try:
            _compile([gxx, *std, "-O1", "-fPIC", "-fno-strict-aliasing", *instrument, "-include", str(prelude),
                      *host_opts, "-c", "-o", str(obj), str(src)], "the kernel source")
            tmp = _atomic_write_target(lib)
            # -z defs: a hook the runtime lacks is a link error here, not a crash at load.
            _compile([gxx, "-shared", "-o", str(tmp), str(obj), str(runtime), f"-Wl,-rpath,{cache}",
                      "-Wl,-z,defs"], "the kernel module")
            os.replace(tmp, lib)
        finally:
            src.unlink(missing_ok=True)
            obj.unlink(missing_ok=True)
        return lib


# --- launching ----------------------------------------------------------------


class _Region(ctypes.Structure):
    _fields_ = [("lo", ctypes.c_size_t), ("hi", ctypes.c_size_t), ("writable", ctypes.c_int),
                ("arg", ctypes.c_int), ("itemsize", ctypes.c_int)]


_ENTRY = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p))


class _LaunchSpec(ctypes.Structure):
    _fields_ = [("entry", ctypes.c_void_p), ("args", ctypes.POINTER(ctypes.c_void_p)),
                ("name", ctypes.c_char_p), ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("dynamic_shared", ctypes.c_ulonglong), ("regions", ctypes.POINTER(_Region)),
                ("nregions", ctypes.c_int), ("static_lo", ctypes.c_void_p), ("static_hi", ctypes.c_void_p),
                ("seed", ctypes.c_ulonglong), ("preempt", ctypes.c_double), ("detect_races", ctypes.c_int)]


_CTYPES = {"f": ctypes.c_float, "d": ctypes.c_double, "?": ctypes.c_bool, "b": ctypes.c_byte,
           "B": ctypes.c_ubyte, "h": ctypes.c_short, "H": ctypes.c_ushort, "i": ctypes.c_int,
           "I": ctypes.c_uint, "l": ctypes.c_long, "L": ctypes.c_ulong, "q": ctypes.c_longlong,
           "Q": ctypes.c_ulonglong}


def _dim3(value, what):
    dims = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"cuda_host: {what} has 1 to 3 dimensions, not {value!r}")
    return dims + (1,) * (3 - len(dims))


class _Library:
    """One build of a module: instrumented (sanitized) or plain."""

    def __init__(self, code, options, sanitize):
        self.sanitize = sanitize
        self.path = build(code, options, sanitize)
        self.lib = ctypes.CDLL(str(self.path))
        self.launch = self.lib.shim_launch
        self.launch.restype = ctypes.c_int
        lo, hi = ctypes.c_void_p(), ctypes.c_void_p()
        self.lib.shim_static_shared(ctypes.byref(lo), ctypes.byref(hi))
        self.static_lo, self.static_hi = lo.value or 0, hi.value or 0

    def entry(self, name):
        return ctypes.cast(getattr(self.lib, f"shim_entry_{name}"), ctypes.c_void_p).value

    def signature(self, name):
        buf = ctypes.create_string_buffer(1024)
        getattr(self.lib, f"shim_signature_{name}")(buf, ctypes.c_size_t(len(buf)))
        return tuple(buf.value.decode().rstrip(",").split(",")) if buf.value else ()


class HostKernel:
    """One kernel of a :class:`HostModule`, called like ``cupy.RawKernel``."""

    def __init__(self, module, name):
        self.module = module
        self.name = name
        #: The C parameter types: "f", "*f" (float*), "const*f" (const float*), "q" (long long), ...
        self.signature = module._library(module.sanitize is not False).signature(name)
        self.launches = 0
        #: Whether the last launch ran the instrumented build (bounds, races, interleaving).
        self.last_launch_sanitized = None

    def _convert(self, i, param, a):
        """One argument -> (its ctypes storage, its memory region or None)."""
        where = f"{self.name}: argument {i} ({param})"
        if param.startswith(("*", "const*")):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{where} is a pointer; got {type(a).__name__}, not an array")
            code = param.split("*", 1)[1]
            if code not in ("v", "b", "B") and a.dtype != np.dtype(code):
                raise TypeError(f"{where}: array of {a.dtype}, the kernel reads {np.dtype(code)}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{where}: the kernels index flat memory; pass a C-contiguous array")
            lo = a.ctypes.data
            writable = not param.startswith("const") and a.flags.writeable
            return ctypes.c_void_p(lo), _Region(lo, lo + a.nbytes, int(writable), i, a.itemsize)
        want = np.dtype(param)
        if not isinstance(a, np.generic) or a.dtype != want:
            got = f"np.{a.dtype}" if isinstance(a, np.generic) else type(a).__name__
            raise TypeError(f"{where} is {want}; got {got} (pass numpy.{want}(...): CuPy would pass "
                            "a value of the wrong size without a word)")
        return _CTYPES[want.char if want.char in _CTYPES else param](a.item()), None

    def __call__(self, grid, block, args, shared_mem=0, *, seed=None):
        module = self.module
        grid, block = _dim3(grid, "grid"), _dim3(block, "block")
        threads = block[0] * block[1] * block[2]
        if any(d < 1 for d in grid + block):
            raise ValueError(f"{self.name}: empty launch grid={grid} block={block}")
        if threads > MAX_THREADS_PER_BLOCK or any(b > m for b, m in zip(block, MAX_BLOCK_DIM)):
            raise ValueError(f"{self.name}: block {block} exceeds the CUDA limits "
                             f"({MAX_THREADS_PER_BLOCK} threads, {MAX_BLOCK_DIM})")
        if any(g > m for g, m in zip(grid, MAX_GRID_DIM)):
            raise ValueError(f"{self.name}: grid {grid} exceeds the CUDA limits {MAX_GRID_DIM}")
        sanitize = module.sanitize is True or (
            module.sanitize == "auto" and threads * grid[0] * grid[1] * grid[2] <= SANITIZE_THREADS)
        library = module._library(sanitize)
        static = library.static_hi - library.static_lo
        if int(shared_mem) < 0 or static + int(shared_mem) > MAX_SHARED_BYTES:
            raise ValueError(f"{self.name}: {static} static + {shared_mem} dynamic bytes of shared memory "
                             f"exceed the {MAX_SHARED_BYTES} a block may use")
        args = tuple(args)
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name} takes {len(self.signature)} arguments ({', '.join(self.signature)}), "
                            f"got {len(args)}")
        storage, regions = [], []
        for i, (param, a) in enumerate(zip(self.signature, args)):
            value, region = self._convert(i, param, a)
            storage.append(value)
            if region is not None:
                regions.append(region)
        pointers = (ctypes.c_void_p * max(1, len(storage)))(*(ctypes.addressof(v) for v in storage))
        region_array = (_Region * max(1, len(regions)))(*regions)
        if seed is None:
            seed = (module.seed * 1_000_003 + module._next_launch()) & ((1 << 64) - 1)
        spec = _LaunchSpec(library.entry(self.name), pointers, self.name.encode(), (ctypes.c_uint * 3)(*grid),
                           (ctypes.c_uint * 3)(*block), int(shared_mem), region_array, len(regions),
                           library.static_lo, library.static_hi, seed,
                           module.preempt if sanitize else 0.0, int(module.detect_races and sanitize))
        error = ctypes.create_string_buffer(2048)
        failed = library.launch(ctypes.byref(spec), error, ctypes.c_size_t(len(error)))
        self.launches += 1
        self.last_launch_sanitized = sanitize
        if failed:
            raise ShimFault(error.value.decode(errors="replace"))


class HostModule:
    """``code`` (a CUDA source as NVRTC would get it) built for the host.

    ``options`` are the NVRTC options (``-DREAL=float``, ``-I...``).
    ``sanitize``: ``True`` runs every launch on the instrumented build (bounds
    checks, race detection, interleaving at each access), ``False`` none
    (threads switch only at barriers), ``"auto"`` (the default) the launches
    of at most :data:`SANITIZE_THREADS` threads, where the checks cost little;
    ``SCRATCHNET_CUDA_HOST_SANITIZE`` (``1``, ``0``, ``auto``) sets the
    default. ``preempt`` is the chance of a thread switch at each access,
    ``detect_races`` turns the race detector on and ``seed`` fixes the
    schedule (launch ``k`` of the module runs with a seed derived from
    ``seed`` and ``k``; a call's ``seed=`` overrides it).
    """

    def __init__(self, code, options=(), *, sanitize=None, preempt=0.25, detect_races=True, seed=0):
        if sanitize is None:
            sanitize = os.environ.get("SCRATCHNET_CUDA_HOST_SANITIZE", "auto")
        sanitize = {"1": True, "0": False, "true": True, "false": False}.get(str(sanitize).lower(), sanitize)
        if sanitize not in (True, False, "auto"):
            raise ValueError(f"cuda_host: sanitize is True, False or 'auto', not {sanitize!r}")
        self.code = code
        self.options = tuple(options)
        self.sanitize = sanitize
        self.preempt = float(preempt)
        self.detect_races = bool(detect_races)
        self.seed = int(seed)
        self._libraries = {}
        self._launches = 0
        self._functions = {}
        self._lock = threading.Lock()
        # Compile now, as RawModule.compile() does, so that errors surface here.
        self._library(sanitize is not False)

    def _library(self, sanitize):
        with self._lock:
            if sanitize not in self._libraries:
                self._libraries[sanitize] = _Library(self.code, self.options, sanitize)
            return self._libraries[sanitize]

    @property
    def static_shared_bytes(self):
        """The bytes of the module's ``__shared__`` arrays (those of fixed size)."""
        library = self._library(self.sanitize is not False)
        return library.static_hi - library.static_lo

    def _next_launch(self):
        with self._lock:
            self._launches += 1
            return self._launches

    def compile(self):
        """For ``cupy.RawModule`` compatibility: the module is built already."""

    def get_function(self, name):
        if name not in self._functions:
            if name not in kernel_names(self.code):
                raise LookupError(f"cuda_host: no kernel {name!r} (have: {', '.join(kernel_names(self.code))})")
            self._functions[name] = HostKernel(self, name)
        return self._functions[name]
