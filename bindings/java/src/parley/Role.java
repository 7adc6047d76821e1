package parley;

/** Chat roles (parley_chat_role). */
public final class Role {
  private Role() {}

  public static final int SYSTEM = 0;
  public static final int USER = 1;
  public static final int ASSISTANT = 2;
  public static final int TOOL = 3;
}
