// Hooking a LiteGraph node type's method without replacing what it already does.

/** Wraps prototype[name] so `after` runs (with the same arguments) once the original has. */
export function chain(prototype, name, after) {
  const original = prototype[name];
  prototype[name] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}
