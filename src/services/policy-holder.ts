import { Policy } from "../domain/policy";

/** The policy in force. `reload` swaps it only if the new file is valid; otherwise the old one stays. */
export class PolicyHolder {
  private current: Policy;

  constructor(
    private readonly file: string,
    private readonly categories: readonly string[],
  ) {
    this.current = Policy.fromFile(file, categories);
  }

  get(): Policy {
    return this.current;
  }

  /** Returns undefined on success, or the reasons the new file was refused. */
  reload(): string[] | undefined {
    try {
      this.current = Policy.fromFile(this.file, this.categories);
      return undefined;
    } catch (err) {
      return (err as { problems?: string[] }).problems ?? [(err as Error).message];
    }
  }
}
