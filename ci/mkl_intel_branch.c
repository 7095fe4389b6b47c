/* Preloaded by ci/setup_env.sh (LD_PRELOAD) on x86-64 CPUs with AVX2: MKL asks this function whether
 * the CPU is Intel's and, on any other vendor, ignores MKL_CBWR=AVX2 and runs its AUTO branch, so an
 * AMD host and an Intel host would multiply matrices in different orders. Answering "yes" lets every
 * AVX2 CPU run the same AVX2 code (lib/scidl/_numerics.py, README: Numerics). On an Intel CPU it
 * changes nothing: MKL's own answer there is the same. */
int mkl_serv_intel_cpu_true(void) { return 1; }
