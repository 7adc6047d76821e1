package parley;

/** Source attention of a hypothesis: [rows = target tokens] x [cols = source tokens], row-major. */
public record Attention(int rows, int cols, float[] weights) {
  public float at(int row, int col) {
    return weights[row * cols + col];
  }
}
