/**
 * Whether a zstd attempt could pay on a grain (FORMAT.md §3, "Compression"), judged from a
 * sample of its bytes before trying. Backup data is often compressed or encrypted already; for
 * such a grain zstd level 1 spent about 3 µs to give back nothing (a tenth of a unique write's
 * CPU), where the sample costs about 1 µs.
 *
 * The reasoning. zstd saves space on a grain in two ways: repeats (matches) and order-0 entropy
 * coding of the literals (Huffman). Order-0 coding saves at most 8 − H bits per byte, H being the
 * Shannon entropy of the byte distribution, and H ≥ H₂ = −log₂ Σ pᵢ² (the collision, or Rényi
 * order-2, entropy). Paying needs a saving of 1/32 (`zstdPays`), a quarter of a bit per byte, so
 * H₂ ≤ 7.75, so Σ pᵢ² ≥ 2^0.25 / 256 ≈ 1.19 / 256. The sample estimates Σ pᵢ² without bias as
 * Σ cᵢ(cᵢ − 1) / (n(n − 1)) over byte counts cᵢ of n sampled bytes; a grain is skipped only when
 * that estimate is below 1.1 / 256, below the bound with a margin of about two standard
 * deviations of the estimate (n ≈ 585). Uniformly random grains are skipped 99.4 % of the time.
 *
 * What the sample cannot see is a repeat inside a grain whose bytes are uniform (the same random
 * 1 KiB four times in one grain): such a grain is stored uncompressed. docs/pool.md says so.
 *
 * Every 7th byte is sampled: an odd stride meets every byte position of records whose length is
 * a power of two (a table of 64-bit integers whose low bytes alone vary is not mistaken for
 * random data, as a stride of 8 would).
 */

/** Bytes between two sampled bytes. */
const SAMPLE_STRIDE = 7;
/** Grains shorter than this are always tried: too few samples to judge. */
const MIN_SAMPLED_BYTES = 1024;
/** 256 Σ pᵢ² below which zstd is not tried (1 for uniform bytes; paying needs about 1.19). */
const SKIP_BELOW = 1.1;

export class CompressibilityProbe {
  /** Counts per byte value of the current sample (at most 4096 / 7 + 1 each: 16 bits). */
  private readonly counts = new Uint16Array(256);

  /** False when the grain's bytes look uniform enough that zstd cannot save 1/32 of it. */
  worthTrying(grain: Uint8Array): boolean {
    const length = grain.length;
    if (length < MIN_SAMPLED_BYTES) return true;
    const counts = this.counts;
    counts.fill(0);
    // Σ cᵢ(cᵢ − 1) / 2, summed as each sample meets the ones of its value before it.
    let pairs = 0;
    let n = 0;
    for (let i = 0; i < length; i += SAMPLE_STRIDE) {
      pairs += counts[grain[i]!]!++;
      n++;
    }
    // 256 · 2 · pairs / (n (n − 1)) < SKIP_BELOW, without a division.
    return 512 * pairs >= SKIP_BELOW * n * (n - 1);
  }
}
