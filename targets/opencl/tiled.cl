// Tiled matrix product and im2col, FP32: the convolution (as GEMM) and Gemm/MatMul kernels.
//
// Compile-time parameters (build options; the runtime chooses them per device and reads the
// values a program was built with from the `abi` kernel, so a prebuilt binary may use others):
//   RM          rows of C per work-item (register block), default 8
//   RN          columns of C per work-item, a vector width: 4, 8 or 16 (default 8)
//   TILE_LOCAL  1: stage tiles of A and B in local memory (GPUs, FPGAs); 0: read them from
//               global memory and let the caches tile (CPU devices), default 0
//   LX, LY      the work-group size of the local-memory variant (reqd_work_group_size)
//   TK          the depth of a local-memory tile, default 16
#ifndef RM
#define RM 8
#endif
#ifndef RN
#define RN 8
#endif
#ifndef TILE_LOCAL
#define TILE_LOCAL 0
#endif
#ifndef LX
#define LX 8
#endif
#ifndef LY
#define LY 8
#endif
#ifndef TK
#define TK 16
#endif
// The kernel ABI's version: the runtime refuses a program whose `abi` says otherwise.
#define SCORIA_ABI 3

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
typedef CAT(float, RN) floatv;
#define VLOAD CAT(vload, RN)
#define VSTORE CAT(vstore, RN)

// Writes the program's ABI version and compile-time parameters:
// out = {SCORIA_ABI, RM, RN, TILE_LOCAL, LX, LY, TK}. Global size: 1.
__kernel void abi(__global int* out)
{
    if (get_global_id(0) != 0) return;
    out[0] = SCORIA_ABI;
    out[1] = RM;
    out[2] = RN;
    out[3] = TILE_LOCAL;
    out[4] = LX;
    out[5] = LY;
    out[6] = TK;
}

// Epilogue activations: 0 none, 1 Relu (NaN kept), 2 Sigmoid, 3 Tanh, 4 Clip(lo, hi),
// 5 Relu as fmax (NaN -> 0: what tract's Conv with a fused Relu gives).
inline float act1(float v, int act, float lo, float hi)
{
    switch (act) {
    case 1: return v < 0.0f ? 0.0f : v;
    case 2: return 1.0f / (1.0f + exp(-v));
    case 3: return tanh(v);
    case 4: v = v < lo ? lo : v; return v > hi ? hi : v;
    case 5: return fmax(v, 0.0f);
    default: return v;
    }
}

inline floatv actv(floatv v, int act, float lo, float hi)
{
    switch (act) {
    case 1: return select(v, (floatv)(0.0f), v < (floatv)(0.0f));
    case 2: return (floatv)(1.0f) / ((floatv)(1.0f) + exp(-v));
    case 3: return tanh(v);
    case 4:
        v = select(v, (floatv)(lo), v < (floatv)(lo));
        return select(v, (floatv)(hi), v > (floatv)(hi));
    case 5: return fmax(v, (floatv)(0.0f));
    default: return v;
    }
}

// C = act(alpha * A' B + beta * bias + res), one matrix per global dim 2 (a batch):
//   A' element (m, k) at a[a_off + img * a_bs + m * a_rs + k * a_cs] (any layout: row-major
//   weights, transposed weights, a transposed operand);
//   B element (k, n) at b[b_off + img * b_bs + k * ldb + n] (row-major: n contiguous);
//   C and res element (m, n) at [c_off + img * c_bs + m * N + n];
//   bias element (m, n) at bias[m * bias_rs + n * bias_cs] (bias_cs is 0 or 1).
// Each work-item computes RM rows x RN columns. Global size: (ceil(N / RN), ceil(M / RM),
// batch), rounded up to the work-group size; with TILE_LOCAL the work-group is (LX, LY, 1).
#if TILE_LOCAL
__attribute__((reqd_work_group_size(LX, LY, 1)))
#endif
__kernel void gemm_tile(__global const float* a, __global const float* b,
                        __global const float* bias, __global const float* res,
                        __global float* c, int M, int N, int K,
                        int a_off, int a_rs, int a_cs, int a_bs,
                        int b_off, int ldb, int b_bs, int c_off, int c_bs,
                        float alpha, float beta, int has_bias, int bias_rs, int bias_cs,
                        int has_res, int act, float lo, float hi)
{
    int n0 = get_global_id(0) * RN;
    int m0 = get_global_id(1) * RM;
    int img = get_global_id(2);
    __global const float* ap = a + a_off + img * a_bs;
    __global const float* bp = b + b_off + img * b_bs;
    floatv acc[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r) acc[r] = (floatv)(0.0f);
#if TILE_LOCAL
    // Tiles of TK rows of A' (LY * RM columns, m) and of B (LX * RN columns, n).
    __local float As[TK][LY * RM];
    __local float Bs[TK][LX * RN];
    int lx = get_local_id(0), ly = get_local_id(1);
    int lid = ly * LX + lx;
    int gm0 = get_group_id(1) * LY * RM;
    int gn0 = get_group_id(0) * LX * RN;
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int i = lid; i < TK * LY * RM; i += LX * LY) {
            int kk = i / (LY * RM), mm = i % (LY * RM);
            int k = k0 + kk, m = gm0 + mm;
            As[kk][mm] = (k < K && m < M) ? ap[m * a_rs + k * a_cs] : 0.0f;
        }
        for (int i = lid; i < TK * LX * RN; i += LX * LY) {
            int kk = i / (LX * RN), nn = i % (LX * RN);
            int k = k0 + kk, n = gn0 + nn;
            Bs[kk][nn] = (k < K && n < N) ? bp[k * ldb + n] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TK; ++kk) {
            floatv bv = VLOAD(0, &Bs[kk][lx * RN]);
#pragma unroll
            for (int r = 0; r < RM; ++r) acc[r] = fma((floatv)(As[kk][ly * RM + r]), bv, acc[r]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (n0 >= N || m0 >= M) return;
    bool full = n0 + RN <= N;
#else
    if (n0 >= N || m0 >= M) return;
    // Rows past M read row M - 1 (their results are not stored).
    int ar[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r) ar[r] = min(m0 + r, M - 1) * a_rs;
    bool full = n0 + RN <= N;
    if (full) {
        __global const float* bk = bp + n0;
        for (int k = 0; k < K; ++k) {
            floatv bv = VLOAD(0, bk);
            int ko = k * a_cs;
#pragma unroll
            for (int r = 0; r < RM; ++r) acc[r] = fma((floatv)(ap[ar[r] + ko]), bv, acc[r]);
            bk += ldb;
        }
    } else {
        // The last, partial block of columns: scalar loads, the rest of the vector stays 0.
        int nn = N - n0;
        for (int k = 0; k < K; ++k) {
            float t[RN];
            for (int j = 0; j < RN; ++j) t[j] = j < nn ? bp[k * ldb + n0 + j] : 0.0f;
            floatv bv = VLOAD(0, t);
            int ko = k * a_cs;
#pragma unroll
            for (int r = 0; r < RM; ++r) acc[r] = fma((floatv)(ap[ar[r] + ko]), bv, acc[r]);
        }
    }
#endif
    __global float* cp = c + c_off + img * c_bs;
    __global const float* rp = res + c_off + img * c_bs;
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        int m = m0 + r;
        if (m >= M) break;
        floatv v = acc[r] * alpha;
        if (full) {
            if (has_bias) {
                if (bias_cs == 0) v += beta * bias[m * bias_rs];
                else v += beta * VLOAD(0, bias + m * bias_rs + n0);
            }
            if (has_res) v += VLOAD(0, rp + m * N + n0);
            VSTORE(actv(v, act, lo, hi), 0, cp + m * N + n0);
        } else {
            float t[RN];
            VSTORE(v, 0, t);
            for (int j = 0; j < RN && n0 + j < N; ++j) {
                int n = n0 + j;
                float s = t[j];
                if (has_bias) s += beta * bias[m * bias_rs + n * bias_cs];
                if (has_res) s += rp[m * N + n];
                cp[m * N + n] = act1(s, act, lo, hi);
            }
        }
    }
}

// im2col for Conv 2-D (NCHW): col[img][k][p] with k = (c * KH + kh) * KW + kw over the
// C channels of x from channel c_off (a group's), p = oh * OW + ow; zero where the window
// reads padding. x holds CT channels per image. Each work-item writes one row of the output
// (OW values of one k). Global size: (OH, C * KH * KW, N).
__kernel void im2col(__global const float* x, __global float* col,
                     int CT, int c_off, int C, int H, int W, int OH, int OW, int KH, int KW,
                     int SH, int SW, int PT, int PL, int DH, int DW)
{
    int oh = get_global_id(0);
    int k = get_global_id(1);
    int img = get_global_id(2);
    int K = C * KH * KW;
    if (oh >= OH || k >= K) return;
    int kw = k % KW;
    int t = k / KW;
    int kh = t % KH;
    int ch = t / KH;
    __global float* out = col + ((img * K + k) * OH + oh) * OW;
    int ih = oh * SH - PT + kh * DH;
    if (ih < 0 || ih >= H) {
        for (int ow = 0; ow < OW; ++ow) out[ow] = 0.0f;
        return;
    }
    __global const float* row = x + ((img * CT + c_off + ch) * H + ih) * W;
    int iw0 = kw * DW - PL;
    if (SW == 1 && iw0 >= 0 && iw0 + OW <= W) {
        for (int ow = 0; ow < OW; ++ow) out[ow] = row[iw0 + ow];
        return;
    }
    for (int ow = 0; ow < OW; ++ow) {
        int iw = iw0 + ow * SW;
        out[ow] = (iw >= 0 && iw < W) ? row[iw] : 0.0f;
    }
}

// FP16 storage (`[opencl] precision = "fp16"`): im2col writing half columns, gemm_tile
// reading half A' (Conv weights, K x M) and half B (columns), and gemm_tile reading float A
// and half B (Gemm / MatMul constant weights), accumulating in float, with the same float
// epilogue and output. Half values are read and written with vload_half /
// vstore_half (core OpenCL), so only the storage is half; the runtime offers it on devices
// with cl_khr_fp16, where half storage pays.
__kernel void im2col_h(__global const float* x, __global half* col,
                       int CT, int c_off, int C, int H, int W, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW)
{
    int oh = get_global_id(0);
    int k = get_global_id(1);
    int img = get_global_id(2);
    int K = C * KH * KW;
    if (oh >= OH || k >= K) return;
    int kw = k % KW;
    int t = k / KW;
    int kh = t % KH;
    int ch = t / KH;
    int out = ((img * K + k) * OH + oh) * OW;
    int ih = oh * SH - PT + kh * DH;
    if (ih < 0 || ih >= H) {
        for (int ow = 0; ow < OW; ++ow) vstore_half(0.0f, out + ow, col);
        return;
    }
    __global const float* row = x + ((img * CT + c_off + ch) * H + ih) * W;
    int iw0 = kw * DW - PL;
    for (int ow = 0; ow < OW; ++ow) {
        int iw = iw0 + ow * SW;
        vstore_half((iw >= 0 && iw < W) ? row[iw] : 0.0f, out + ow, col);
    }
}

// gemm_tile with half B (and half A' when `ah` is given, else float `af`), shared by
// gemm_tile_h (Conv: half weights and columns) and gemm_tile_hb (Gemm / MatMul: float
// activations times half constant weights). a_* and b_* count elements of their own type.
// No local-memory variant: the work-group is the runtime's choice.
inline void gemm_tile_half(__global const float* af, __global const half* ah, int a_half,
                           __global const half* b,
                           __global const float* bias, __global const float* res,
                           __global float* c, int M, int N, int K,
                           int a_off, int a_rs, int a_cs, int a_bs,
                           int b_off, int ldb, int b_bs, int c_off, int c_bs,
                           float alpha, float beta, int has_bias, int bias_rs, int bias_cs,
                           int has_res, int act, float lo, float hi)
{
    int n0 = get_global_id(0) * RN;
    int m0 = get_global_id(1) * RM;
    int img = get_global_id(2);
    if (n0 >= N || m0 >= M) return;
    int ap = a_off + img * a_bs;
    int bp = b_off + img * b_bs;
    floatv acc[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r) acc[r] = (floatv)(0.0f);
    int ar[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r) ar[r] = ap + min(m0 + r, M - 1) * a_rs;
    bool full = n0 + RN <= N;
    for (int k = 0; k < K; ++k) {
        floatv bv;
        if (full) {
            bv = CAT(vload_half, RN)(0, b + bp + k * ldb + n0);
        } else {
            float t[RN];
            for (int j = 0; j < RN; ++j)
                t[j] = n0 + j < N ? vload_half(bp + k * ldb + n0 + j, b) : 0.0f;
            bv = VLOAD(0, t);
        }
        int ko = k * a_cs;
#pragma unroll
        for (int r = 0; r < RM; ++r) {
            float av = a_half ? vload_half(ar[r] + ko, ah) : af[ar[r] + ko];
            acc[r] = fma((floatv)(av), bv, acc[r]);
        }
    }
    __global float* cp = c + c_off + img * c_bs;
    __global const float* rp = res + c_off + img * c_bs;
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        int m = m0 + r;
        if (m >= M) break;
        floatv v = acc[r] * alpha;
        if (full) {
            if (has_bias) {
                if (bias_cs == 0) v += beta * bias[m * bias_rs];
                else v += beta * VLOAD(0, bias + m * bias_rs + n0);
            }
            if (has_res) v += VLOAD(0, rp + m * N + n0);
            VSTORE(actv(v, act, lo, hi), 0, cp + m * N + n0);
        } else {
            float t[RN];
            VSTORE(v, 0, t);
            for (int j = 0; j < RN && n0 + j < N; ++j) {
                int n = n0 + j;
                float s = t[j];
                if (has_bias) s += beta * bias[m * bias_rs + n * bias_cs];
                if (has_res) s += rp[m * N + n];
                cp[m * N + n] = act1(s, act, lo, hi);
            }
        }
    }
}

// gemm_tile with half A' and B (Conv: half weights, half columns; same arguments as
// gemm_tile, a_* and b_* count halves).
__kernel void gemm_tile_h(__global const half* a, __global const half* b,
                          __global const float* bias, __global const float* res,
                          __global float* c, int M, int N, int K,
                          int a_off, int a_rs, int a_cs, int a_bs,
                          int b_off, int ldb, int b_bs, int c_off, int c_bs,
                          float alpha, float beta, int has_bias, int bias_rs, int bias_cs,
                          int has_res, int act, float lo, float hi)
{
    gemm_tile_half(0, a, 1, b, bias, res, c, M, N, K, a_off, a_rs, a_cs, a_bs, b_off, ldb,
                   b_bs, c_off, c_bs, alpha, beta, has_bias, bias_rs, bias_cs, has_res, act,
                   lo, hi);
}

// gemm_tile with float A' and half B (Gemm / MatMul: activations times half constant
// weights; same arguments as gemm_tile, b_* count halves).
__kernel void gemm_tile_hb(__global const float* a, __global const half* b,
                           __global const float* bias, __global const float* res,
                           __global float* c, int M, int N, int K,
                           int a_off, int a_rs, int a_cs, int a_bs,
                           int b_off, int ldb, int b_bs, int c_off, int c_bs,
                           float alpha, float beta, int has_bias, int bias_rs, int bias_cs,
                           int has_res, int act, float lo, float hi)
{
    gemm_tile_half(a, 0, 0, b, bias, res, c, M, N, K, a_off, a_rs, a_cs, a_bs, b_off, ldb,
                   b_bs, c_off, c_bs, alpha, beta, has_bias, bias_rs, bias_cs, has_res, act,
                   lo, hi);
}
