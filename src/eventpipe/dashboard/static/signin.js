// The sign-in page: a session that only needs its 15-minute cookie renewed goes on at once.

import { refreshSession } from "./app.js";

const form = document.getElementById("signin");
const signedOut = new URLSearchParams(location.search).has("signed_out");
if (form && !signedOut && !document.querySelector(".error") && (await refreshSession())) {
  location.replace(form.dataset.next || "/");
}
