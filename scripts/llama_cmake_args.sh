#!/usr/bin/env bash
# Print the CMAKE_ARGS that build llama.cpp for this CPU.
# A native build (-march=native) crashes on machines whose CPU advertises AMX but faults on it
# (SIGILL in ggml_backend_amx_mul_mat), so we never build natively: we enable each x86 extension
# the CPU reports, and leave ggml's own AMX code off. (teachback's patch has AMX kernels of its own, which
# ask Linux for the tile state and check the CPU at run time.) On non-x86 CPUs the compiler defaults are used.
set -eu
args="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
case "$(uname -m)" in
  x86_64|amd64)
    flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.features machdep.cpu.leaf7_features 2>/dev/null | tr 'A-Z' 'a-z' || true)
    has() { printf ' %s ' "$flags" | grep -q " $1 "; }
    has avx && args="$args -DGGML_AVX=ON"
    has avx2 && args="$args -DGGML_AVX2=ON"
    has fma && args="$args -DGGML_FMA=ON"
    has f16c && args="$args -DGGML_F16C=ON"
    has bmi2 && args="$args -DGGML_BMI2=ON"
    if has avx512f && has avx512bw && has avx512vl; then
      args="$args -DGGML_AVX512=ON"
      has avx512vbmi && args="$args -DGGML_AVX512_VBMI=ON"
      has avx512_vnni && args="$args -DGGML_AVX512_VNNI=ON"
      has avx512_bf16 && args="$args -DGGML_AVX512_BF16=ON"
    fi
    args="$args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    ;;
esac
echo "$args"
