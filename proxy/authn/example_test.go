package authn_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/moltgate/moltgate/proxy/authn"
	"github.com/moltgate/moltgate/proxy/authn/clerktest"
	"github.com/prometheus/client_golang/prometheus"
)

func Example() {
	fake, err := clerktest.NewServer() // stands in for https://api.clerk.com/v1
	if err != nil {
		fmt.Println(err)
		return
	}
	defer fake.Close()

	verifier, err := authn.NewClerk(authn.ClerkConfig{
		APIURL:            fake.URL,
		SecretKey:         fake.SecretKey(),
		Issuer:            fake.Issuer(),
		AuthorizedParties: []string{clerktest.DefaultAuthorizedParty},
	}, nil, prometheus.NewRegistry())
	if err != nil {
		fmt.Println(err)
		return
	}

	r := httptest.NewRequest("GET", "https://gw-1.gateways.example/", nil)
	r.Header.Set("Authorization", "Bearer "+fake.Mint(clerktest.Claims{Org: &clerktest.Org{ID: "org_1", Role: "admin"}}))

	tok, ok, err := authn.Credential(r)
	switch {
	case err != nil:
		fmt.Println("401", authn.Reason(err))
	case !ok:
		fmt.Println("anonymous")
	case authn.IsGatewayToken(tok):
		fmt.Println("look up", fmt.Sprintf("%x", authn.HashToken(tok))[:8])
	default:
		id, err := verifier.Verify(context.Background(), tok)
		if err != nil {
			fmt.Println("401", authn.Reason(err))
			return
		}
		fmt.Println(id.Kind, id.UserID, id.SessionID, id.OrgID, id.OrgRole)
	}
	// Output: user user_2test sess_2test org_1 org:admin
}
