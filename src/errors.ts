// Every error ferry raises carries a stable code, so scripts and the API can match on it
// without parsing messages.
export class FerryError extends Error {
  constructor(readonly code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
