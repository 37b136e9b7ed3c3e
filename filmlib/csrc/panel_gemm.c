/* filmlib's panel GEMM: C = A @ B (+ bias) for a few rows of A against one large, packed B.

   The GRU of the paper's FiLM generator multiplies, at every time step, the (n x 4096) states by
   a 4096 x 12288 weight (and, going back, (n x 12288) gradients by its 12288 x 4096 transpose),
   with n <= 64. The weight is 201 MB: it streams from memory at every step, and a library GEMM
   that packs it per call (or reads it without prefetching) waits for memory and then computes,
   one after the other. Here the weight is packed once per pass over the sequence, into panels of
   16 columns laid out in the order the kernel reads them, and while the kernel multiplies one
   panel chunk by every 6-row tile of A it prefetches the next chunk, so streaming and
   arithmetic overlap.

   Layout of a packed B (K x N, N a multiple of 16), in blocks of KC rows:
       P[k0 * N + p * kc * 16 + k * 16 + c] = B[k0 + k][16 p + c]
   for each block start k0 (kc = min(KC, K - k0) rows), panel p and 0 <= k < kc, 0 <= c < 16:
   each (block, panel) chunk is contiguous, and a thread's chunks follow each other in memory.

   A is copied per call into 6-row tiles, [block][tile][k][r], zero rows padding the last tile.
   The micro-kernel keeps a 6 x 16 tile of C in 12 AVX registers and, for each k, broadcasts six
   values of A against two 8-wide vectors of B (12 fused multiply-adds).

   Needs AVX2 and FMA (compiled with -mavx2 -mfma; the Python side checks the CPU). Threads come
   from OpenMP (-fopenmp), each taking a contiguous range of panels, so each streams its own part
   of B. Loaded into a process where torch has already loaded its libgomp.so.1, the library binds
   to that same runtime and runs on torch's own worker threads: plain pthreads instead would
   compete for the cores with torch's workers, which spin for a while after each parallel op.
   Written for filmlib; exact to float rounding against torch's products (tests compare them). */
#include <immintrin.h>
#include <string.h>

#define NR 16          /* columns per panel: two 8-wide vectors */
#define MR 6           /* rows per tile */
#define KC 256         /* rows of B per block: a chunk is 16 KB, a tile of A 6 KB (both in L1) */
#define MAX_THREADS 64

int panel_gemm_abi(void) { return 1; }

/* threads to use: at least one, at most one per panel and MAX_THREADS */
static int clamp_threads(int threads, long panels)
{
    if (threads > panels) threads = (int)panels;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    return threads < 1 ? 1 : threads;
}

/* One tile: C[0..mr) x [0..16) (+)= A_tile @ chunk over kc rows (kc % 4 == 0). acc: add to C;
   else start from bias (or zero). Prefetches `lines` cache lines from pf, spread over the loop. */
static inline __attribute__((always_inline)) void tile(const int mr, long kc, const float *A,
        const float *P, float *C, long ldc, const float *bias, int acc, const char *pf, long lines)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 i0 = bias ? _mm256_loadu_ps(bias) : zero, i1 = bias ? _mm256_loadu_ps(bias + 8) : zero;
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define DECL(r) __m256 c##r##0 = i0, c##r##1 = i1;                                        \
    if (mr > r && acc) { c##r##0 = _mm256_loadu_ps(C + r * ldc); c##r##1 = _mm256_loadu_ps(C + r * ldc + 8); }
    ROWS(DECL)
#undef DECL
    /* prefetch `lines` lines over kc / 4 iterations: q lines every `every` iterations */
    const long iters = kc / 4;
    long q = 1, every = 1;
    if (lines > iters) q = (lines + iters - 1) / iters;
    else if (lines > 0) every = iters / lines;
    const char *pf_end = pf + lines * 64;
    long count = every;
    for (long k = 0; k < kc; k += 4) {
        __m256 b0, b1, x;
#define FMA(r, u) if (mr > r) { x = _mm256_broadcast_ss(A + (k + u) * MR + r);                \
        c##r##0 = _mm256_fmadd_ps(x, b0, c##r##0); c##r##1 = _mm256_fmadd_ps(x, b1, c##r##1); }
#define KSTEP(u) b0 = _mm256_load_ps(P + (k + u) * NR); b1 = _mm256_load_ps(P + (k + u) * NR + 8); \
        FMA(0, u) FMA(1, u) FMA(2, u) FMA(3, u) FMA(4, u) FMA(5, u)
        KSTEP(0) KSTEP(1) KSTEP(2) KSTEP(3)
#undef KSTEP
#undef FMA
        if (--count == 0) {
            count = every;
            for (long i = 0; i < q && pf < pf_end; i++, pf += 64) _mm_prefetch(pf, _MM_HINT_T1);
        }
    }
#define STORE(r) if (mr > r) { _mm256_storeu_ps(C + r * ldc, c##r##0); _mm256_storeu_ps(C + r * ldc + 8, c##r##1); }
    ROWS(STORE)
#undef STORE
#undef ROWS
}

static void tile_rows(long mr, long kc, const float *A, const float *P, float *C, long ldc,
                      const float *bias, int acc, const char *pf, long lines)
{
    switch (mr) {   /* one specialised copy per row count: the accumulators stay in registers */
    case 6: tile(6, kc, A, P, C, ldc, bias, acc, pf, lines); break;
    case 5: tile(5, kc, A, P, C, ldc, bias, acc, pf, lines); break;
    case 4: tile(4, kc, A, P, C, ldc, bias, acc, pf, lines); break;
    case 3: tile(3, kc, A, P, C, ldc, bias, acc, pf, lines); break;
    case 2: tile(2, kc, A, P, C, ldc, bias, acc, pf, lines); break;
    default: tile(1, kc, A, P, C, ldc, bias, acc, pf, lines); break;
    }
}

typedef struct { long M, N, K, p0, p1; const float *Ap, *P, *bias; float *C; } gemm_job;

static void gemm_panels(const gemm_job *j)
{
    const long M = j->M, N = j->N, K = j->K, tiles = (M + MR - 1) / MR;
    for (long k0 = 0; k0 < K; k0 += KC) {
        const long kc = K - k0 < KC ? K - k0 : KC;
        const long chunk_lines = kc * NR * (long)sizeof(float) / 64;
        const long per_tile = (chunk_lines + tiles - 1) / tiles;
        for (long p = j->p0; p < j->p1; p++) {
            const float *chunk = j->P + k0 * N + p * kc * NR;
            const char *next = NULL;            /* the chunk this thread reads after this one */
            long next_lines = 0;
            if (p + 1 < j->p1) { next = (const char *)(chunk + kc * NR); next_lines = chunk_lines; }
            else if (k0 + KC < K) {
                const long kn = K - k0 - KC < KC ? K - k0 - KC : KC;
                next = (const char *)(j->P + (k0 + KC) * N + j->p0 * kn * NR);
                next_lines = kn * NR * (long)sizeof(float) / 64;
            }
            for (long t = 0; t < tiles; t++) {
                const long m0 = t * MR, mr = M - m0 < MR ? M - m0 : MR;
                long lines = 0;
                const char *pf = (const char *)chunk;     /* any valid address: nothing is read when lines == 0 */
                if (next) {
                    const long first = t * per_tile;
                    lines = first >= next_lines ? 0 : (next_lines - first < per_tile ? next_lines - first : per_tile);
                    if (lines > 0) pf = next + first * 64;
                }
                tile_rows(mr, kc, j->Ap + k0 * tiles * MR + t * kc * MR, chunk, j->C + m0 * N + p * NR, N,
                          j->bias ? j->bias + p * NR : NULL, k0 > 0, pf, lines);
            }
        }
    }
}

/* C (M x N, row-major) = A (M x K, row-major) @ B (+ bias (N) if not NULL); B packed by
   panel_pack; Ap: scratch of ceil(M / 6) * 6 * K floats; P 32-byte aligned.
   Returns 0, or -1 if the shapes are not supported (N % 16, K % 4). */
int panel_gemm(long M, long N, long K, const float *A, const float *P, const float *bias, float *C,
               float *Ap, int threads)
{
    if (M < 1 || N % NR || K % 4 || K < 4) return -1;
    const long panels = N / NR, tiles = (M + MR - 1) / MR;
    for (long k0 = 0; k0 < K; k0 += KC) {
        const long kc = K - k0 < KC ? K - k0 : KC;
        for (long t = 0; t < tiles; t++) {
            float *dst = Ap + k0 * tiles * MR + t * kc * MR;
            for (long r = 0; r < MR; r++) {
                const long m = t * MR + r;
                if (m < M) { const float *src = A + m * K + k0; for (long k = 0; k < kc; k++) dst[k * MR + r] = src[k]; }
                else for (long k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
            }
        }
    }
    threads = clamp_threads(threads, panels);
    gemm_job jobs[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        jobs[t] = (gemm_job){M, N, K, panels * t / threads, panels * (t + 1) / threads, Ap, P, bias, C};
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) gemm_panels(&jobs[t]);
    return 0;
}

typedef struct { long K, N, p0, p1; const float *W; float *P; int transposed; } pack_job;

/* an 8 x 8 block: 8 rows of src (stride ld) -> 8 rows of dst (stride NR), transposed */
static inline void transpose8(const float *s, long ld, float *d)
{
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ld), r2 = _mm256_loadu_ps(s + 2 * ld),
           r3 = _mm256_loadu_ps(s + 3 * ld), r4 = _mm256_loadu_ps(s + 4 * ld), r5 = _mm256_loadu_ps(s + 5 * ld),
           r6 = _mm256_loadu_ps(s + 6 * ld), r7 = _mm256_loadu_ps(s + 7 * ld);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(d + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(d + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(d + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(d + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(d + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(d + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(d + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(d + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
}

static void pack_part(const pack_job *j)
{
    const long K = j->K, N = j->N;
    for (long k0 = 0; k0 < K; k0 += KC) {
        const long kc = K - k0 < KC ? K - k0 : KC;
        for (long p = j->p0; p < j->p1; p++) {
            float *dst = j->P + k0 * N + p * kc * NR;
            if (j->transposed) {            /* W is (N x K): B[k][n] = W[n][k] */
                const float *src = j->W + p * NR * K + k0;
                long k = 0;
                for (; k + 8 <= kc; k += 8) {
                    transpose8(src + k, K, dst + k * NR);
                    transpose8(src + 8 * K + k, K, dst + k * NR + 8);
                }
                for (; k < kc; k++)
                    for (long c = 0; c < NR; c++) dst[k * NR + c] = src[c * K + k];
            } else {                        /* W is (K x N): B = W */
                for (long k = 0; k < kc; k++)
                    memcpy(dst + k * NR, j->W + (k0 + k) * N + p * NR, NR * sizeof(float));
            }
        }
    }
}

/* Pack B (K x N) into P (K * N floats, 32-byte aligned). transposed = 0: W is B itself (K x N,
   row-major); transposed = 1: W is B's transpose (N x K, row-major), as a torch Linear weight.
   Returns 0, or -1 if N % 16. */
int panel_pack(const float *W, long K, long N, int transposed, float *P, int threads)
{
    if (N % NR || K < 1) return -1;
    const long panels = N / NR;
    threads = clamp_threads(threads, panels);
    pack_job jobs[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        jobs[t] = (pack_job){K, N, panels * t / threads, panels * (t + 1) / threads, W, P, transposed};
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) pack_part(&jobs[t]);
    return 0;
}
