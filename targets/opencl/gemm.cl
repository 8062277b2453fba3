// Tiled matrix product with local memory, FP32.
//   C[m, n] = alpha * sum_k A'[m, k] * B'[k, n] + beta * bias[m * bias_rs + n * bias_cs]
// A' is A (M x K, row-major) or its transpose (trans_a: A is K x M); likewise B' (K x N or,
// with trans_b, N x K). Offsets (in elements) select one matrix of a batch. bias_rs/bias_cs
// are 0 along broadcast axes; has_bias = 0 ignores `bias`. act = 1 fuses a ReLU.
// Local size: TILE x TILE; global size rounded up to multiples of TILE (dim 0 = n, 1 = m).
#define TILE 16
__kernel void gemm(__global const float* a, __global const float* b,
                   __global const float* bias, __global float* c,
                   int M, int N, int K, int trans_a, int trans_b,
                   int a_off, int b_off, int c_off,
                   float alpha, float beta, int has_bias, int bias_rs, int bias_cs, int act)
{
    __local float As[TILE][TILE];
    __local float Bs[TILE][TILE];
    int col = get_global_id(0);
    int row = get_global_id(1);
    int lc = get_local_id(0);
    int lr = get_local_id(1);
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        int ka = k0 + lc;
        float av = 0.0f;
        if (row < M && ka < K)
            av = trans_a ? a[a_off + ka * M + row] : a[a_off + row * K + ka];
        As[lr][lc] = av;
        int kb = k0 + lr;
        float bv = 0.0f;
        if (col < N && kb < K)
            bv = trans_b ? b[b_off + col * K + kb] : b[b_off + kb * N + col];
        Bs[lr][lc] = bv;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < TILE; ++k)
            acc += As[lr][k] * Bs[k][lc];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row < M && col < N) {
        float v = alpha * acc;
        if (has_bias) v += beta * bias[row * bias_rs + col * bias_cs];
        if (act == 1) v = v < 0.0f ? 0.0f : v;
        c[c_off + row * N + col] = v;
    }
}

// The same product without tiles, one work-item per output element (same arguments as
// `gemm`): for few rows (M < 16) the 16x16 tiles would idle most work-items.
// Global size: N * M (1-D; n varies fastest).
__kernel void gemm_rows(__global const float* a, __global const float* b,
                        __global const float* bias, __global float* c,
                        int M, int N, int K, int trans_a, int trans_b,
                        int a_off, int b_off, int c_off,
                        float alpha, float beta, int has_bias, int bias_rs, int bias_cs, int act)
{
    int gid = get_global_id(0);
    if (gid >= M * N) return;
    int col = gid % N;
    int row = gid / N;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
        float av = trans_a ? a[a_off + k * M + row] : a[a_off + row * K + k];
        float bv = trans_b ? b[b_off + col * K + k] : b[b_off + k * N + col];
        acc += av * bv;
    }
    float v = alpha * acc;
    if (has_bias) v += beta * bias[row * bias_rs + col * bias_cs];
    if (act == 1) v = v < 0.0f ? 0.0f : v;
    c[c_off + row * N + col] = v;
}
